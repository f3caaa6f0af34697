"""Which format a path holds, and loading any of them as a descriptor model.

The formats are asked in turn (`FORMATS`); each detects itself from the path and owns its
loading, description and fingerprint:

- `.keras` files (`keras_format`);
- SavedModels and TF Serving base paths of versions (`saved_model_format`);
- ONNX and LiteRT exports, folders of versions too (`onnx_format`, `litert_format`; their
  runtimes are the `runtimes` extra, imported when one is loaded).
"""

from __future__ import annotations

import os

from sare_tf.artifacts.descriptor_model import DescriptorModel
from sare_tf.artifacts.keras_format import KerasFormat
from sare_tf.artifacts.litert_format import LiteRTFormat
from sare_tf.artifacts.onnx_format import OnnxFormat
from sare_tf.artifacts.saved_model_format import SavedModelFormat
from sare_tf.registry import RUNTIME_KINDS

FORMATS = {fmt.name: fmt for fmt in (KerasFormat, SavedModelFormat, OnnxFormat, LiteRTFormat)}
if set(FORMATS) != {kind for kinds in RUNTIME_KINDS.values() for kind in kinds}:
    raise ImportError(f"Formats {sorted(FORMATS)} differ from the runtimes' kinds {RUNTIME_KINDS}.")


def locate_model(path) -> tuple[str, str]:
    """`(located path, format name)` of the model at `path`.

    A `.keras` file, a SavedModel folder (or a base path of versions: the highest), or the
    version folder of an ONNX or LiteRT export.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: no format recognises `path` (the message says what each expects).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model not found. Received: path={path!r}")
    for fmt in FORMATS.values():
        located = fmt.detect(path)
        if located is not None:
            return located, fmt.name
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory without saved_model.pb, model.onnx or model.tflite, nor "
            "numbered version folders holding one: not a SavedModel or an export."
        )
    raise ValueError(
        "Expected a .keras file or a SavedModel directory (or an ONNX / LiteRT export). "
        f"Received: path={path!r}"
    )


def load_descriptor_model(
    path: str | os.PathLike, precision: str | None = None, safe_mode: bool = True
) -> DescriptorModel:
    """Loads a `.keras` model, a SavedModel, a TF Serving base path or an export.

    Args:
        path: a `.keras` file, a SavedModel directory (holding `saved_model.pb`), a TF Serving
            model root holding numbered version folders (the highest version is used), or an
            ONNX / LiteRT export (its file, version folder or base path).
        precision: for `.keras` models, compute the backbone in this policy ("auto",
            "mixed_bfloat16", ...); None keeps the saved policies. Exports run as exported.
        safe_mode: Keras's `safe_mode` (refuses lambda layers' pickled code); keep True for files
            from elsewhere.

    Returns:
        A `DescriptorModel` with the image size the model records.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is not a valid model of any format.

    Example:
        >>> loaded = load_descriptor_model("runs/train/best.keras")
        >>> loaded.image_size
        (480, 640)
    """
    located, name = locate_model(path)
    return FORMATS[name].load(located, precision=precision, safe_mode=safe_mode)


def model_fingerprint(loaded: DescriptorModel) -> str:
    """What identifies the descriptors a model computes, whatever file it came from.

    A Keras model: the hash of its weights. An export written by sare_tf: the weights hash of
    the Keras model it was exported from (so that an index built with `best.keras` accepts its
    float export; quantized exports add `:int8` / `:dynamic`); any other SavedModel: the hash
    of its files.
    """
    return FORMATS[loaded.kind].fingerprint(loaded)


def describe_artifact(loaded: DescriptorModel) -> dict:
    """What the model's format records about it (a Keras model: `describe()`; an export: its
    info file)."""
    return FORMATS[loaded.kind].describe(loaded)


def check_runtime(runtime: str | None, loaded) -> None:
    """Refuses models that are not `runtime`'s artefacts (`--runtime tf|onnx|litert`; None: any).

    `loaded`: one `DescriptorModel` or several.
    """
    if runtime is None:
        return
    models = loaded if isinstance(loaded, list | tuple) else [loaded]
    wrong = [f"{m.path} ({m.kind})" for m in models if m.kind not in RUNTIME_KINDS[runtime]]
    if wrong:
        raise ValueError(
            f"--runtime {runtime} but these models are not {runtime} artefacts: {wrong}. "
            "Export one with sare-tf export --format onnx|litert, or pass the .keras / "
            "SavedModel for --runtime tf."
        )
