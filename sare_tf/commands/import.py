"""`sare-tf import SRC --out MODEL.keras`: a community checkpoint as a sare_tf model."""

from __future__ import annotations

import argparse

HELP = "import a pytorch-NetVlad / Patch-NetVLAD checkpoint (or Keras VGG16 weights) as .keras"
DESCRIPTION = """\
Reads a checkpoint without PyTorch and without running code from it (an allow-list unpickler
refuses anything but tensors and containers), checks every tensor's name and shape against the
source's schema, and writes a standard .keras embedding model (VGG16 cropped at conv5_3,
NetVLAD with the checkpoint's centroids, assignment weights and bias if any, the WPCA layer if
any, the source's pixel normalisation) with a JSON sidecar OUT.json (source, sha256, format,
descriptor size). Evaluate, export, serve, explain or fine-tune it like any sare_tf model:
sare-tf train --initial-model MODEL.keras ..."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.convert import FORMATS

    parser.add_argument("src", help="the checkpoint (.pth, .pth.tar) or weights file (.h5)")
    parser.add_argument("--out", required=True, help="the .keras model to write")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="default: from the name")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=[480, 640],
        help="the image size the model was trained at, recorded in it (default 480 640)",
    )  # fmt: skip
    parser.add_argument(
        "--trained-on", default=None, help="what the checkpoint was trained on (recorded)"
    )


def run(args: argparse.Namespace) -> int:
    from sare_tf.convert import import_checkpoint

    sidecar = import_checkpoint(
        args.src, args.out, args.format, tuple(args.image_size), args.trained_on
    )
    model = sidecar["model"]
    print(
        f"Imported {args.src} ({sidecar['format']}) as {args.out}: {model['backbone']} + "
        f"NetVLAD({model['num_clusters']})"
        + (f" + PCA({model['pca_dim']})" if model["pca_dim"] else "")
        + f", {model['descriptor_dim']}-d descriptors; sidecar {args.out}.json"
    )
    return 0
