"""PyTorch VGG16 + NetVLAD checkpoints of four projects, as sare_tf embedding models.

All four crop torchvision's `vgg16().features` at conv5_3 (`children()[:-2]`: no last ReLU, no
last max-pool), an `nn.Sequential` whose convolutions sit at indices 0, 2 | 5, 7 | 10, 12, 14 |
17, 19, 21 | 24, 26, 28 (max-pools at 4, 9, 16, 23; 3x3, stride 1, padding 1; ReLU after each
but the last): keys `<encoder>.<i>.weight` `[out, in, 3, 3]`, `<encoder>.<i>.bias` `[out]`.
Their NetVLAD is the same module (pytorch-NetVlad's): `<pool>.centroids` `[K, D]`,
`<pool>.conv.weight` `[K, D, 1, 1]` (the soft assignment), `<pool>.conv.bias` `[K]` only in
pytorch-NetVlad's `vladv2=True`. Forward: L2-normalise each location over D;
`softmax_k(conv(x))`; `vlad[k, d] = sum_n a_nk (x_nd - c_kd)`; intra-normalise over d; flatten
k-major (`k * D + d`); L2-normalise. sare_tf's NetVLAD flattens the same way, so no permutation
is needed; torch's NCHW kernels `[out, in, kh, kw]` become Keras's `[kh, kw, in, out]`.
`nn.DataParallel` inserts `module.` (removed before matching).

Per project (`TORCH_LAYOUTS`), as their code defines it:

- **pytorch-netvlad** (Nanne/pytorch-NetVlad `main.py`; QVPR/Patch-NetVLAD
  `patchnetvlad/models/models_generic.py`): `torch.save({"epoch", "state_dict", "recalls",
  "best_score", "optimizer", "parallel"})`; submodules `encoder`, `pool` and, in Patch-NetVLAD's
  `*_WPCA{128,512,4096}.pth.tar`, `WPCA = nn.Sequential(Conv2d(K*D, P, 1), Flatten, L2Norm)`:
  `WPCA.0.weight` `[P, K*D, 1, 1]`, `WPCA.0.bias` `[P]`. Pixels: RGB / 255, ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
- **vg-benchmark** (gmberton/deep-visual-geo-localization-benchmark `model/network.py`,
  `model/aggregation.py`, `util.py`): `torch.save({"epoch_num", "model_state_dict",
  "optimizer_state_dict", "recalls", "best_r5", "not_improved_num"})` as `best_model.pth`;
  `GeoLocalizationNet` with `backbone` (the cropped features) and `aggregation` (NetVLAD without
  bias); with `--fc_output_dim P` the aggregation is `nn.Sequential(NetVLAD, nn.Linear(K*D, P),
  L2Norm)`: `aggregation.0.centroids`, `aggregation.0.conv.weight`, `aggregation.1.weight`
  `[P, K*D]`, `aggregation.1.bias` `[P]`. Pixels: ImageNet mean / std as above. Its ResNet, CCT
  and ViT backbones and its GeM / CRN aggregations are not VGG16 + NetVLAD and are refused.
- **openibl** (yxgeee/OpenIBL `ibl/models/vgg.py`, `netvlad.py`, `hubconf.py`, `ibl/pca.py`):
  `EmbedNet(base_model, net_vlad)` / `EmbedNetPCA(..., dim=4096)`: `base_model.base.<i>...`,
  `net_vlad.centroids`, `net_vlad.conv.weight`, and for `EmbedNetPCA` `pca_layer.weight`
  `[P, K*D, 1, 1]`, `pca_layer.bias` `[P]` (then L2). The torch.hub release `vgg16_netvlad.pth`
  is a plain state dict of `EmbedNetPCA`; training checkpoints are `{"state_dict", "epoch",
  "best_recall5"}` (keys under `module.`) with the PCA in a separate `pca_params_*.h5`
  (`read_openibl_pca`). Pixels: `Normalize(mean=(0.48502, 0.45796, 0.40760), std=1/255)` on RGB
  in [0, 1], i.e. RGB 0-255 minus (123.68, 116.779, 103.939) (`ImagePreprocessing("rgb_mean")`).

Images are 480 x 640 in all four projects' Pittsburgh / Tokyo protocols.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np

from sare_tf.convert.vgg16_netvlad import VGG16_CONVS, expect_shape, refuse_unexpected

# torchvision vgg16.features index of each convolution, in VGG16_CONVS order.
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
IMAGENET_TORCH = {"mode": "torch"}
OPENIBL_MEAN = (0.48501960784313836, 0.4579568627450961, 0.4076039215686255)  # x 255 below


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """Where one project keeps the VGG16 / NetVLAD / projection tensors in its state dict."""

    format: str
    encoder: str  # key prefix of the cropped vgg16.features
    pool: str  # key prefix of NetVLAD
    projection: str | None  # key prefix of the PCA / FC after NetVLAD (weight, bias)
    projection_kind: str  # "conv" ([P, K*D, 1, 1]) or "linear" ([P, K*D])
    projection_required: bool
    preprocessing: dict


TORCH_LAYOUTS = (
    TorchLayout("pytorch-netvlad", "encoder.", "pool.", "WPCA.0.", "conv", False, IMAGENET_TORCH),
    TorchLayout("vg-benchmark", "backbone.", "aggregation.", None, "", False, IMAGENET_TORCH),
    TorchLayout(
        "vg-benchmark", "backbone.", "aggregation.0.", "aggregation.1.", "linear", True,
        IMAGENET_TORCH,
    ),
    TorchLayout(
        "openibl", "base_model.base.", "net_vlad.", "pca_layer.", "conv", False,
        {"mode": "rgb_mean", "mean": [255.0 * m for m in OPENIBL_MEAN]},
    ),
)  # fmt: skip
TORCH_FORMATS = tuple(dict.fromkeys(layout.format for layout in TORCH_LAYOUTS))
# Where each project's checkpoint keeps the state dict (a plain state dict is accepted too).
STATE_DICT_KEYS = ("state_dict", "model_state_dict")


def state_dict_of(checkpoint, path: str) -> dict:
    """The model's state dict inside a checkpoint, with `nn.DataParallel`'s `module.` removed."""
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        found = (
            sorted(map(str, checkpoint))[:10]
            if isinstance(checkpoint, dict)
            else type(checkpoint).__name__
        )
        raise ValueError(
            f"{path}: expected a checkpoint dict with a state dict of tensors ('state_dict', "
            f"'model_state_dict', or the state dict itself). Received: {found}"
        )
    return {key.replace("module.", ""): value for key, value in state.items()}


def _not_vgg16_netvlad(state: dict) -> str | None:
    """Why a state dict of one of these projects is not VGG16 + NetVLAD, or None."""
    if any(".0.conv1.weight" in key or ".downsample." in key for key in state):
        return "its backbone is a ResNet; sare_tf imports VGG16 + NetVLAD models"
    if any(key.endswith(("aggregation.p", "aggregation.0.p", "aggregation.1.p")) for key in state):
        return "its aggregation is GeM; sare_tf imports NetVLAD models"
    return None


def detect_layout(state: dict, path: str, format: str = "auto") -> TorchLayout:
    """The layout whose encoder and NetVLAD keys the state dict has (restricted to `format`)."""
    reason = _not_vgg16_netvlad(state)
    if reason:
        raise ValueError(f"{path}: {reason}.")
    # The encoder prefix names the project; the NetVLAD prefix tells the variants apart (a
    # missing NetVLAD tensor is then reported by name in `check_schema`).
    candidates = [layout for layout in TORCH_LAYOUTS if f"{layout.encoder}0.weight" in state]
    if not candidates:
        raise ValueError(
            f"{path}: not a VGG16 + NetVLAD checkpoint of {', '.join(TORCH_FORMATS)}: its keys "
            f"match none of their layouts (first keys: {sorted(state)[:8]})."
        )
    if format != "auto" and candidates[0].format != format:
        raise ValueError(
            f"{path}: not a {format} checkpoint: its keys are those of {candidates[0].format}."
        )
    with_pool = [
        layout
        for layout in candidates
        if any(key.startswith(f"{layout.pool}c") for key in state)
        and (not layout.projection_required or f"{layout.projection}weight" in state)
    ]
    return (with_pool or candidates)[-1]


def check_schema(state: dict, path: str, layout: TorchLayout) -> dict:
    """Every tensor of the layout, checked by name and shape, converted to Keras layout.

    Returns:
        The `build_model` dict of `sare_tf.convert.vgg16_netvlad`.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped key (named, with both shapes).
    """
    encoder, channels = {}, 3
    expected = set()
    for index, name in zip(TORCH_CONV_INDICES, VGG16_CONVS, strict=True):
        weight_key, bias_key = f"{layout.encoder}{index}.weight", f"{layout.encoder}{index}.bias"
        weight = expect_shape(state, weight_key, (None, channels, 3, 3), path)
        bias = expect_shape(state, bias_key, (weight.shape[0],), path)
        encoder[name] = (weight.transpose(2, 3, 1, 0), bias)
        channels = weight.shape[0]
        expected |= {weight_key, bias_key}
    pool = layout.pool
    centroids = expect_shape(state, f"{pool}centroids", (None, channels), path)
    num_clusters = centroids.shape[0]
    assignment = expect_shape(state, f"{pool}conv.weight", (num_clusters, channels, 1, 1), path)
    bias = None
    if f"{pool}conv.bias" in state:
        bias = expect_shape(state, f"{pool}conv.bias", (num_clusters,), path)
    expected |= {f"{pool}centroids", f"{pool}conv.weight", f"{pool}conv.bias"}
    converted = {
        "encoder": encoder,
        "centroids": centroids,
        "assignment_kernel": assignment.transpose(2, 3, 1, 0),
        "assignment_bias": bias,
        "pca": None,
        "preprocessing": dict(layout.preprocessing),
    }
    prefix = layout.projection
    if prefix is not None and f"{prefix}weight" in state:
        vlad_dim = num_clusters * channels
        shape = (None, vlad_dim, 1, 1) if layout.projection_kind == "conv" else (None, vlad_dim)
        weight = expect_shape(state, f"{prefix}weight", shape, path).reshape(-1, vlad_dim)
        projection_bias = expect_shape(state, f"{prefix}bias", (weight.shape[0],), path)
        converted["pca"] = (weight.T.copy(), projection_bias)
        expected |= {f"{prefix}weight", f"{prefix}bias"}
    refuse_unexpected(state, expected, path, f"a {layout.format} VGG16 + NetVLAD model")
    return converted


def read_openibl_pca(path, num_components: int | None = None, whitening: bool = True):
    """OpenIBL's `pca_params_*.h5` as `(projection [K*D, P], bias [P])` for `converted["pca"]`.

    The file (`ibl/pca.py`, after relja_PCA.m) holds `U` `[K*D, P]` (eigenvectors, descending
    eigenvalues), `lams` `[P]`, `mu` `[K*D, 1]` and `Utmu`. OpenIBL applies `W = (U diag(lams^-1/2))^T`
    (without the scaling when not whitening), bias `-W mu`, then L2.
    """

    path = str(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in ("U", "lams", "mu") if key not in h5]
            if missing:
                raise ValueError(
                    f"{path}: not an OpenIBL PCA file: no dataset {missing} "
                    f"(found {sorted(h5.keys())[:8]})."
                )
            eigenvectors = np.asarray(h5["U"][...], np.float64)
            eigenvalues = np.asarray(h5["lams"][...], np.float64).ravel()
            mean = np.asarray(h5["mu"][...], np.float64).reshape(-1)
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}).") from None
    dims, available = eigenvectors.shape if eigenvectors.ndim == 2 else (None, None)
    if dims is None or eigenvalues.shape != (available,) or mean.shape != (dims,):
        raise ValueError(
            f"{path}: inconsistent PCA shapes U {eigenvectors.shape}, lams {eigenvalues.shape}, "
            f"mu {mean.shape} (expected [D, P], [P], [D, 1])."
        )
    count = available if num_components is None else int(num_components)
    if not 0 < count <= available:
        raise ValueError(
            f"{path}: has {available} components. Received: num_components={num_components}"
        )
    projection = eigenvectors[:, :count]
    if whitening:
        projection = projection / np.sqrt(eigenvalues[:count])[None, :]
    bias = -(mean @ projection)
    return projection.astype(np.float32), bias.astype(np.float32)
