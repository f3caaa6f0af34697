"""`import_checkpoint`: a community checkpoint -> a sare_tf `.keras` model and its JSON sidecar.

Each format's reader turns the file into a model (`sare_tf.convert.formats` lists them; each
importer's module holds its source's schema); the model is written atomically with a sidecar
saying where it came from.
"""

from __future__ import annotations

import datetime
import json
import os

from sare_tf.artifacts import describe_model, store_image_size
from sare_tf.atomic import save_model_atomic, write_json_atomic
from sare_tf.convert import boq, hloc_netvlad, netvlad_tf, pytorch_netvlad, resnet_gem
from sare_tf.convert.formats import FORMATS, MATCONVNET_REFUSAL, RESNET_GEM, TORCH, detect_format
from sare_tf.convert.megaloc import import_megaloc, is_megaloc
from sare_tf.convert.safetensors_file import read_safetensors
from sare_tf.convert.torch_checkpoint import read_torch_checkpoint
from sare_tf.convert.vgg16_netvlad import build_model
from sare_tf.hashing import file_sha256, files_sha256
from sare_tf.models import build_embedding_model, freeze_before


def import_checkpoint(
    src,
    out,
    format: str = "auto",
    image_size=(480, 640),
    trained_on: str | None = None,
    pca_file=None,
    pca_dim: int | None = None,
) -> dict:
    """Converts `src` into the sare_tf embedding model `out` (`.keras`); returns the sidecar.

    Args:
        src: the checkpoint: a `.pth(.tar)` file, a TF checkpoint (prefix, one of its files or
            its folder) or a Keras VGG16 `.h5`.
        out: the `.keras` file to write (and `<out>.json`).
        format: one of `FORMATS`; "auto" tells it from the name and, for PyTorch files, the keys.
        image_size: `(height, width)` the model was trained at, recorded in it.
        trained_on: what the checkpoint was trained on, recorded in the sidecar.
        pca_file: OpenIBL's `pca_params_*.h5`, for its checkpoints that keep the PCA apart.
        pca_dim: keep the first `pca_dim` components of `pca_file` (default all).

    Raises:
        UnsafeCheckpointError: the checkpoint names code outside the allow-list (nothing ran).
        ValueError: an unknown format, or a missing / unexpected / wrongly shaped tensor (named).
        FileNotFoundError: no file at `src`.
    """
    src, out = os.fspath(src), os.fspath(out)
    if not out.endswith(".keras"):
        raise ValueError(f"The output must be a .keras file. Received: out={out!r}")
    if format not in FORMATS:
        raise ValueError(f"Unknown format. Expected one of {FORMATS}. Received: format={format!r}")
    fmt = format
    if fmt == "auto":
        fmt = detect_format(src)
    if pca_file is not None and fmt not in ("torch", "openibl"):
        raise ValueError(f"--pca (an OpenIBL PCA file) applies to openibl checkpoints, not {fmt}.")
    reader = _read_torch if fmt in ("torch", *TORCH) else READERS[fmt]
    model, fmt, extra, source, files = reader(src, fmt, image_size, pca_file, pca_dim)
    described = describe_model(model)
    save_model_atomic(model, out)
    sidecar = {
        "source": os.path.abspath(source),
        "sha256": files_sha256(*files),
        "format": fmt,
        "trained_on": trained_on,
        "model": described,
        "checkpoint": extra,
        "imported_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(f"{out}.json", sidecar)
    return json.loads(json.dumps(sidecar))


def _existing_file(path: str, what: str = "Checkpoint") -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _read_netvlad_tf(src, fmt, image_size, pca_file, pca_dim):
    prefix = netvlad_tf.checkpoint_prefix(src)
    files = netvlad_tf.checkpoint_files(prefix)
    converted = netvlad_tf.check_schema(netvlad_tf.read_tf_checkpoint(prefix), prefix)
    extra = {"files": [os.path.basename(f) for f in files]}
    return _build(converted, image_size), fmt, extra, prefix, files


def _read_hloc_netvlad(src, fmt, image_size, pca_file, pca_dim):
    net = hloc_netvlad.read_struct_mat(_existing_file(src), MATCONVNET_REFUSAL.format(path=src))
    return _build(hloc_netvlad.check_schema(net, src), image_size), fmt, {}, src, [src]


def _read_megaloc(src, fmt, image_size, pca_file, pca_dim):
    model, extra = _import_megaloc(_existing_file(src), image_size)
    return model, fmt, extra, src, [src]


def _read_keras_vgg16(src, fmt, image_size, pca_file, pca_dim):
    model = build_embedding_model("vgg16", weights=_existing_file(src, "Weights file"))
    store_image_size(model, image_size)
    return model, fmt, {}, src, [src]


def _read_torch(src, fmt, image_size, pca_file, pca_dim):
    model, fmt, extra = _import_torch(_existing_file(src), fmt, image_size, pca_file, pca_dim)
    return model, fmt, extra, src, [src]


# Each reader: (src, format, image_size, pca_file, pca_dim) -> (model, format, extra, source,
# files hashed); PyTorch files go to `_read_torch`, which tells their projects apart by the keys.
READERS = {
    "netvlad-tf": _read_netvlad_tf,
    "hloc-netvlad": _read_hloc_netvlad,
    "megaloc": _read_megaloc,
    "keras-vgg16": _read_keras_vgg16,
}


def _build(converted: dict, image_size):
    model = build_model(converted, image_size)
    freeze_before(model, "block5_conv1")  # the NetVLAD / SARE fine-tuning default
    return model


def _import_megaloc(src: str, image_size):
    state = read_safetensors(src)
    if not is_megaloc(state):
        raise ValueError(
            f"{src}: not a MegaLoc checkpoint: no 'aggregator.agg.dust_bin' with "
            f"'backbone.cls_token' (first keys: {sorted(state)[:8]})."
        )
    return import_megaloc(state, src, image_size)


def _import_torch(src: str, fmt: str, image_size, pca_file, pca_dim):
    checkpoint = read_torch_checkpoint(src)
    state = pytorch_netvlad.state_dict_of(checkpoint, src)
    if fmt in ("torch", *RESNET_GEM) and resnet_gem.is_resnet_gem(state):
        if pca_file is not None or pca_dim is not None:
            raise ValueError(
                f"{src}: --pca / --pca-dim apply to openibl checkpoints, not to ResNet + GeM."
            )
        model, extra = resnet_gem.import_resnet_gem(state, src, image_size)
        return model, "cosplace/eigenplaces" if fmt == "torch" else fmt, extra
    if fmt in ("torch", "boq") and boq.is_boq(state):
        if pca_file is not None or pca_dim is not None:
            raise ValueError(f"{src}: --pca / --pca-dim apply to openibl checkpoints, not to BoQ.")
        model, extra = boq.import_boq(state, src, image_size)
        return model, "boq", extra
    if fmt == "boq":
        raise ValueError(
            f"{src}: not a BoQ checkpoint: no 'aggregator.proj_c.weight' with 'aggregator.boqs.0.queries'."
        )
    if fmt in RESNET_GEM:
        raise ValueError(
            f"{src}: not a {fmt} checkpoint: no 'backbone.0.weight' [64, 3, 7, 7] (a ResNet's conv1) "
            "with 'aggregation.1.p' (GeM) among its keys."
        )
    layout = pytorch_netvlad.detect_layout(state, src, "auto" if fmt == "torch" else fmt)
    converted = pytorch_netvlad.check_schema(state, src, layout)
    if pca_file is not None:
        if layout.format != "openibl":
            raise ValueError(
                f"{src}: --pca applies to openibl checkpoints; this is {layout.format}."
            )
        if converted["pca"] is not None:
            raise ValueError(f"{src}: the checkpoint already has its PCA layer; drop --pca.")
        converted["pca"] = pytorch_netvlad.read_openibl_pca(pca_file, pca_dim)
        vlad_dim = converted["centroids"].size
        if converted["pca"][0].shape[0] != vlad_dim:
            raise ValueError(
                f"{pca_file}: the PCA is for {converted['pca'][0].shape[0]}-d vectors; the "
                f"checkpoint's NetVLAD gives {vlad_dim}."
            )
    elif pca_dim is not None:
        raise ValueError("--pca-dim needs --pca (an OpenIBL PCA file).")
    extra = {}
    if isinstance(checkpoint, dict):
        extra = {
            k: checkpoint[k]
            for k in ("epoch", "epoch_num", "best_score", "best_r5", "best_recall5")
            if isinstance(checkpoint.get(k), int | float)
        }
    extra["vladv2"] = converted["assignment_bias"] is not None
    if pca_file is not None:
        extra["pca_file"] = os.path.abspath(os.fspath(pca_file))
        extra["pca_file_sha256"] = file_sha256(os.fspath(pca_file))
    return _build(converted, image_size), layout.format, extra
