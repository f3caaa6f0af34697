"""`sare-tf import SRC --out MODEL.keras`: a community checkpoint as a sare_tf model."""

from __future__ import annotations

import argparse

HELP = "import a community VGG16 + NetVLAD checkpoint (PyTorch or TensorFlow) as .keras"
DESCRIPTION = """\
Formats: pytorch-netvlad (pytorch-NetVlad, Patch-NetVLAD), vg-benchmark (Deep Visual
Geo-localization Benchmark), openibl (OpenIBL; --pca for its separate PCA file), netvlad-tf
(netvlad_tf_open's TF checkpoint of the NetVLAD authors' MatConvNet model), keras-vgg16 (Keras
VGG16 ImageNet weights). PyTorch files are read without PyTorch and without running code from
them (an allow-list unpickler refuses anything but tensors and containers). Every tensor's name
and shape is checked against the source's schema; the result is a standard .keras embedding
model (VGG16 cropped at conv5_3, NetVLAD with the checkpoint's centroids, assignment weights and
bias if any, its PCA / WPCA / FC projection if any, the source's pixel normalisation) with a JSON
sidecar OUT.json (source, sha256, format, descriptor size). Evaluate, export, serve, explain or fine-tune it like any sare_tf model:
sare-tf train --initial-model MODEL.keras ..."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.convert import FORMATS

    parser.add_argument(
        "src",
        help="the checkpoint: .pth / .pth.tar, a TF checkpoint (prefix, its .index or its "
        "folder), or a Keras weights file (.h5)",
    )
    parser.add_argument("--out", required=True, help="the .keras model to write")
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="default: from the name, and for PyTorch files from the keys",
    )
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=[480, 640],
        help="the image size the model was trained at, recorded in it (default 480 640)",
    )  # fmt: skip
    parser.add_argument(
        "--trained-on", default=None, help="what the checkpoint was trained on (recorded)"
    )
    parser.add_argument(
        "--pca", default=None, metavar="H5",
        help="OpenIBL's pca_params_*.h5, for its checkpoints that keep the PCA apart",
    )  # fmt: skip
    parser.add_argument(
        "--pca-dim", type=int, default=None,
        help="keep the first N components of --pca (default: all in the file, 4096 in OpenIBL)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from sare_tf.convert import import_checkpoint

    sidecar = import_checkpoint(
        args.src, args.out, args.format, tuple(args.image_size), args.trained_on,
        pca_file=args.pca, pca_dim=args.pca_dim,
    )  # fmt: skip
    model = sidecar["model"]
    print(
        f"Imported {args.src} ({sidecar['format']}) as {args.out}: {model['backbone']} + "
        f"NetVLAD({model['num_clusters']})"
        + (f" + PCA({model['pca_dim']})" if model["pca_dim"] else "")
        + f", {model['descriptor_dim']}-d descriptors; sidecar {args.out}.json"
    )
    return 0
