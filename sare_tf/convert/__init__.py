"""Community checkpoints as sare_tf models: `import_checkpoint(src, out)` / `sare-tf import`.

Formats (each importer's module docstring holds the source's schema, as facts):
- "pytorch-netvlad": pytorch-NetVlad and Patch-NetVLAD `.pth(.tar)` checkpoints (VGG16 +
  NetVLAD, v1 or v2, with or without WPCA); "vg-benchmark": the Deep Visual Geo-localization
  Benchmark's VGG16 + NetVLAD (+ FC) models; "openibl": OpenIBL's VGG16 + NetVLAD (+ PCA, baked
  in or from its `pca_params_*.h5`). All three are read without PyTorch by an allow-list
  unpickler (`torch_checkpoint`); the layouts are in `pytorch_netvlad`.
- "netvlad-tf": netvlad_tf_open's TensorFlow checkpoint of the NetVLAD authors' MatConvNet model
  (`netvlad_tf`, with the d*K+k -> k*D+d whitening permutation).
- "cosplace", "eigenplaces": CosPlace's and EigenPlaces' releases, torchvision ResNet + GeM + FC
  (one layout, `resnet_gem`), read by the same allow-list unpickler.
- "boq": Bag-of-Queries releases, ResNet-50 (to layer3) or DINOv2 ViT/14 + BoQ (`boq`).
- "megaloc": MegaLoc's `model.safetensors` (DINOv2 + optimal-transport aggregation, `megaloc`),
  read by a safetensors reader of sare_tf's own (`safetensors_file`; the format holds no code).
- "hloc-netvlad": the NetVLAD authors' MatConvNet models as plain MATLAB structs (hloc's
  `Pitts30K_struct.mat` / `TokyoTM_struct.mat`, read with scipy: `hloc_netvlad`).
- "keras-vgg16": a Keras VGG16 ImageNet weights file (`.h5`): the same code path as
  `sare-tf train --weights PATH` (NetVLAD is then still to be clustered).

The authors' original MatConvNet `.mat` networks are refused with the route to take (the struct
versions above are read): their NetVLAD layers are MATLAB classdef objects, which MATLAB saves as opaque MCOS data that scipy (or any reader outside MATLAB)
returns as undocumented bytes; netvlad_tf_open needed MATLAB (`net_class2struct.m`) to turn them
into structs first, and publishes the converted best model as the TF checkpoint read here.

The result is a standard `.keras` embedding model (written atomically: a failed import leaves no
file) and a JSON sidecar `<out>.json` saying where it came from: source path and sha256, format,
what it was trained on (as given), descriptor size, NetVLAD K, PCA size, image size.
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "formats": ("FORMATS", "TORCH", "RESNET_GEM", "detect_format"),
        "importing": ("import_checkpoint",),
    },
)
