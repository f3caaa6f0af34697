"""`sare-tf import SRC --out MODEL.keras` / `sare-tf import --preset NAME`: a released model as a
sare_tf model."""

from __future__ import annotations

import argparse

from sare_tf.registry import PRESETS

HELP = "import a released place-recognition model (PyTorch, safetensors or TF checkpoint) as .keras"
DESCRIPTION = """\
Formats: pytorch-netvlad (pytorch-NetVlad, Patch-NetVLAD), vg-benchmark (Deep Visual
Geo-localization Benchmark), openibl (OpenIBL; --pca for its separate PCA file), cosplace and
eigenplaces (ResNet + GeM + FC), boq (Bag-of-Queries, ResNet-50 or DINOv2), megaloc (its
model.safetensors), netvlad-tf (netvlad_tf_open's TF checkpoint of the NetVLAD authors'
MatConvNet model), keras-vgg16 (Keras VGG16 ImageNet weights). PyTorch files are read without
PyTorch and without running code from them (an allow-list unpickler refuses anything but tensors
and containers); safetensors files hold no code. Every tensor's name and shape is checked
against the source's schema; the result is a standard .keras model with the source's pixel
normalisation and a JSON sidecar OUT.json (source, sha256, format, descriptor size).
--preset NAME downloads a known release into the Keras cache first (sha256 checked: the
authors' where published, else the first download's, recorded). Evaluate, export, serve,
explain or fine-tune it like any sare_tf model: sare-tf train --initial-model MODEL.keras ...
Presets: """ + ", ".join(
    f"{p.name} ({p.descriptor_dim}-d, {p.image_size[0]}x{p.image_size[1]}, {p.licence})"
    for p in PRESETS.values()
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.convert import FORMATS

    parser.add_argument(
        "src",
        nargs="?",
        help="the checkpoint: .pth / .pth.tar, .safetensors, a TF checkpoint (prefix, its .index "
        "or its folder), or a Keras weights file (.h5); or --preset",
    )
    parser.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="a known release, downloaded"
    )
    parser.add_argument(
        "--out", default=None,
        help="the .keras model to write (required with SRC; with --preset, default: the cache)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", default=None, help="where presets are kept (default ~/.keras/models/sare_tf)"
    )
    parser.add_argument(
        "--mirror", default=None, metavar="URL",
        help="fetch the preset's file name from this base URL instead of the authors' URL",
    )  # fmt: skip
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="default: from the name, and for PyTorch files from the keys",
    )
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=[480, 640],
        help="the image size the model was trained at, recorded in it (default 480 640; a "
        "preset records its authors' size)",
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
    if (args.src is None) == (args.preset is None):
        raise SystemExit("sare-tf import: give either a checkpoint file (SRC) or --preset NAME.")
    if args.preset is not None:
        from sare_tf.convert.presets import import_preset

        sidecar = import_preset(args.preset, args.out, args.cache_dir, args.mirror)
        source, out = args.preset, args.out or sidecar["output"]
    else:
        if args.out is None:
            raise SystemExit(
                "sare-tf import: --out MODEL.keras is required with a checkpoint file."
            )
        from sare_tf.convert import import_checkpoint

        sidecar = import_checkpoint(
            args.src, args.out, args.format, tuple(args.image_size), args.trained_on,
            pca_file=args.pca, pca_dim=args.pca_dim,
        )  # fmt: skip
        source, out = args.src, args.out
    model = sidecar["model"]
    parts = [model["backbone"], model["aggregator"]]
    if model.get("num_clusters"):
        parts[1] = f"NetVLAD({model['num_clusters']})"
    if model.get("pca_dim"):
        parts.append(f"PCA({model['pca_dim']})")
    print(
        f"Imported {source} ({sidecar['format']}) as {out}: {' + '.join(parts)}, "
        f"{model['descriptor_dim']}-d descriptors; sidecar {out}.json"
    )
    return 0
