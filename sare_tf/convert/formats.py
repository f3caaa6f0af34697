"""The checkpoint formats `sare-tf import` reads, and how a file's name tells its format.

Pure Python, so that the command lists the formats in `--help` before anything heavy loads.
"""

from __future__ import annotations

import os

FORMATS = (
    "auto", "pytorch-netvlad", "vg-benchmark", "openibl", "cosplace", "eigenplaces", "boq",
    "megaloc", "netvlad-tf", "hloc-netvlad", "keras-vgg16",
)  # fmt: skip
TORCH = ("pytorch-netvlad", "vg-benchmark", "openibl", "cosplace", "eigenplaces", "boq")
RESNET_GEM = ("cosplace", "eigenplaces")
MATCONVNET_REFUSAL = (
    "{path}: not a NetVLAD network of plain MATLAB structs (a 'net' with 'layers' holding "
    "'weights'). The authors' original MatConvNet .mat networks cannot be read outside MATLAB "
    "(their NetVLAD layers are classdef objects stored as opaque MCOS data). Use hloc's struct "
    "version (Pitts30K_struct.mat, TokyoTM_struct.mat), netvlad_tf_open's TensorFlow checkpoint "
    "of the same model (vd16_pitts30k_conv5_3_vlad_preL2_intra_white) with --format netvlad-tf, "
    "or convert your own .mat with netvlad_tf_open's matlab/net_class2struct.m first."
)


def detect_format(path: str) -> str:
    """The format family from the file name: "torch" (one of `TORCH`, told apart later by the
    state dict's keys), "netvlad-tf" or "keras-vgg16"."""
    name = os.path.basename(path.rstrip("/")).lower()
    if name.endswith(".mat"):
        return "hloc-netvlad"
    if name.endswith((".pth", ".pth.tar", ".pt", ".tar")):
        return "torch"
    if name.endswith(".safetensors"):
        return "megaloc"
    if name.endswith(".h5"):
        return "keras-vgg16"
    if os.path.isdir(path) or name.endswith((".index", ".meta")) or ".data-" in name:
        return "netvlad-tf"
    if os.path.isfile(f"{path}.index"):
        return "netvlad-tf"
    raise ValueError(
        f"Cannot tell the format of {path} from its name; pass --format ({', '.join(FORMATS[1:])})."
    )
