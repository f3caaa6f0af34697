"""Community checkpoints as sare_tf models: `import_checkpoint(src, out)` / `sare-tf import`.

Formats:
- "pytorch-netvlad": pytorch-NetVlad and Patch-NetVLAD `.pth(.tar)` checkpoints (VGG16 + NetVLAD,
  v1 or v2, with or without WPCA), read without PyTorch by an allow-list unpickler
  (`torch_checkpoint`); the schema is in `pytorch_netvlad`.
- "keras-vgg16": a Keras VGG16 ImageNet weights file (`.h5`): the same code path as
  `sare-tf train --weights PATH` (NetVLAD is then still to be clustered).

The result is a standard `.keras` embedding model (written atomically: a failed import leaves no
file) and a JSON sidecar `<out>.json` saying where it came from: source path and sha256, format,
what it was trained on (as given), descriptor size, NetVLAD K, PCA size, image size.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

FORMATS = ("auto", "pytorch-netvlad", "keras-vgg16")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.endswith((".pth", ".pth.tar", ".pt", ".tar")):
        return "pytorch-netvlad"
    if name.endswith(".h5"):
        return "keras-vgg16"
    raise ValueError(
        f"Cannot tell the format of {path} from its name; pass --format ({', '.join(FORMATS[1:])})."
    )


def import_checkpoint(
    src, out, format: str = "auto", image_size=(480, 640), trained_on: str | None = None
) -> dict:
    """Converts `src` into the sare_tf embedding model `out` (`.keras`); returns the sidecar.

    Raises:
        UnsafeCheckpointError: the checkpoint names code outside the allow-list (nothing ran).
        ValueError: an unknown format, or a missing / unexpected / wrongly shaped tensor (named).
        FileNotFoundError: no file at `src`.
    """
    from sare_tf.models import freeze_before
    from sare_tf.training.atomic import save_model_atomic

    src, out = os.fspath(src), os.fspath(out)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"Checkpoint not found: {src}")
    if not out.endswith(".keras"):
        raise ValueError(f"The output must be a .keras file. Received: out={out!r}")
    fmt = detect_format(src) if format == "auto" else format
    extra = {}
    if fmt == "pytorch-netvlad":
        from sare_tf.convert.pytorch_netvlad import build_model, check_schema, state_dict_of
        from sare_tf.convert.torch_checkpoint import read_torch_checkpoint

        checkpoint = read_torch_checkpoint(src)
        converted = check_schema(state_dict_of(checkpoint, src), src)
        model = build_model(converted, image_size)
        freeze_before(model, "block5_conv1")  # the NetVLAD / SARE fine-tuning default
        if isinstance(checkpoint, dict):
            extra = {
                k: checkpoint[k]
                for k in ("epoch", "best_score")
                if isinstance(checkpoint.get(k), int | float)
            }
        extra["vladv2"] = converted["assignment_bias"] is not None
    elif fmt == "keras-vgg16":
        from sare_tf.descriptor_model import store_image_size
        from sare_tf.models import build_embedding_model

        model = build_embedding_model("vgg16", weights=src)
        store_image_size(model, image_size)
    else:
        raise ValueError(f"Unknown format. Expected one of {FORMATS}. Received: format={format!r}")
    from sare_tf.descriptor_model import describe_model

    described = describe_model(model)
    save_model_atomic(model, out)
    sidecar = {
        "source": os.path.abspath(src),
        "sha256": sha256_of(src),
        "format": fmt,
        "trained_on": trained_on,
        "model": described,
        "checkpoint": extra,
        "imported_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    from sare_tf.training.atomic import write_json_atomic

    write_json_atomic(f"{out}.json", sidecar)
    return json.loads(json.dumps(sidecar))
