"""`sare-tf import SRC --out MODEL.keras` / `sare-tf import --preset NAME`: a released model as a
sare_tf model."""

from __future__ import annotations

import argparse

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.convert.settings import ImportSettings
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
    """One argument per field of `ImportSettings`."""
    add_config_arguments(parser, ImportSettings)


def run(args: argparse.Namespace) -> int:
    settings = config_from_args(ImportSettings, args)
    if settings.preset is not None:
        from sare_tf.convert.presets import import_preset

        sidecar = import_preset(settings.preset, settings.out, settings.cache_dir, settings.mirror)
        source, out = settings.preset, settings.out or sidecar["output"]
    else:
        from sare_tf.convert import import_checkpoint

        sidecar = import_checkpoint(
            settings.src, settings.out, settings.format, settings.image_size,
            settings.trained_on, pca_file=settings.pca, pca_dim=settings.pca_dim,
        )  # fmt: skip
        source, out = settings.src, settings.out
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
