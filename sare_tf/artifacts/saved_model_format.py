"""The SavedModel format: TF Serving's versions of a named model, written atomically, read back.

```
<root>/<name>/              TF Serving's model base path (--model_base_path)
  1/                        SavedModel (saved_model.pb, variables/, fingerprint.pb)
    assets.extra/export_info.json
  1.keras                   Keras copy of the same model, for fine-tuning
  2/  2.keras               the next export
```

TF Serving loads only integer-named subfolders of the base path (and serves the highest by
default), so the `.keras` files and the hidden `.export-*` staging folders beside the versions
are ignored by it. `assets.extra/` is the SavedModel folder for files the graph does not use.

A version is staged in `<root>/<name>/.export-*/` (same file system) and committed by renaming
the folder to its number, so an export that fails leaves no version folder behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sare_tf._version import __version__
from sare_tf.artifacts.descriptor_model import DescriptorModel
from sare_tf.artifacts.signatures import (
    DESCRIPTOR_OUTPUT,
    SERVING_DEFAULT,
    build_export_archive,
    resolve_image_size,
    serving_model,
    signature_summary,
)
from sare_tf.artifacts.versions import (
    check_name,
    locate_version,
    next_version,
    version_label,
)
from sare_tf.hashing import arrays_fingerprint, folder_fingerprint

EXPORT_INFO = os.path.join("assets.extra", "export_info.json")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where a versioned export went.

    Attributes:
        version: the version number.
        saved_model_dir: `<root>/<name>/<version>`, the SavedModel.
        keras_path: `<root>/<name>/<version>.keras`, or None when no copy was asked for.
        info: the contents of `export_info.json`.
    """

    version: int
    saved_model_dir: str
    keras_path: str | None
    info: dict


def _export_info(model, name, version, image_size, source_model) -> dict:
    layer_names = {layer.name for layer in model.layers}
    pca_dim = (
        int(model.get_layer("pca_whitening").output_dim) if "pca_whitening" in layer_names else None
    )
    return {
        "name": name,
        "version": version,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sare_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "source_model": None if source_model is None else str(source_model),
        "keras_model_name": model.name,
        "image_size": list(image_size),
        "descriptor_dim": int(model.outputs[0].shape[-1]),
        "pca_whitening_dim": pca_dim,
        "dtype_policy": model.dtype_policy.name,
        "weights_fingerprint": arrays_fingerprint(w.numpy() for w in model.weights),
        "signatures": signature_summary(model, image_size),
        "output": DESCRIPTOR_OUTPUT,
    }


def export_versioned(
    model: keras.Model,
    root="saved_models",
    name: str = "sare",
    version: int | None = None,
    image_size=None,
    source_model=None,
    keras_copy: bool = True,
) -> ExportResult:
    """Exports `model` as version `version` of `<root>/<name>/`, TF Serving's layout.

    Writes the SavedModel (see `export_saved_model`) with `assets.extra/export_info.json`
    (sare_tf / TensorFlow / Keras versions, image size, descriptor size, source model) and
    a `.keras` copy beside it, all staged in a temporary folder under `<root>/<name>/` and
    renamed into place: whatever fails, no partial version folder is left.

    Args:
        model: embedding model (or tuple model wrapping one).
        root: export root (TF Serving's base path is `<root>/<name>`).
        name: model name (folder name and TF Serving model name).
        version: version number; default the next free one. An existing version is never
            overwritten.
        image_size: `(height, width)` for `serve_jpeg`; default the model's fixed input size.
        source_model: where the model came from (recorded in `export_info.json`).
        keras_copy: also write `<root>/<name>/<version>.keras`.

    Returns:
        An `ExportResult` with the version number and paths.

    Example:
        >>> export_versioned(model, "saved_models", "tiny").version
        1
        >>> export_versioned(model, "saved_models", "tiny").version
        2
    """
    check_name(name)
    model = serving_model(model)
    image_size = resolve_image_size(model, image_size)
    if version is not None and (not isinstance(version, int) or version < 1):
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    model_dir = os.path.abspath(os.path.join(os.fspath(root), name))
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise FileExistsError(
            f"Version {version} of {name!r} already exists at {os.path.join(model_dir, str(version))}; "
            "versions are never overwritten: pick another version or leave it out for the next free one."
        )
    archive = build_export_archive(model, image_size)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=model_dir)
    placed_keras = None
    try:
        staged_model = os.path.join(staging, "saved_model")
        archive.write_out(staged_model, verbose=False)
        staged_keras = os.path.join(staging, "model.keras")
        if keras_copy:
            try:
                model.save(staged_keras)
            except (NotImplementedError, TypeError) as error:
                raise ValueError(
                    f"Could not write the Keras copy of {model.name!r} ({error}); nothing was "
                    "exported. Make its custom layers serialisable or pass keras_copy=False."
                ) from error
        chosen = version if version is not None else next_version(root, name)
        while True:
            info = _export_info(model, name, chosen, image_size, source_model)
            info_path = os.path.join(staged_model, EXPORT_INFO)
            os.makedirs(os.path.dirname(info_path), exist_ok=True)
            with open(info_path, "w", encoding="utf-8") as file:
                json.dump(info, file, indent=2)
                file.write("\n")
            target = os.path.join(model_dir, str(chosen))
            keras_path = f"{target}.keras" if keras_copy else None
            if keras_copy:
                # A `<v>.keras` without a `<v>/` can only be left by a crashed export: replace it.
                os.replace(staged_keras, keras_path)
                placed_keras = keras_path
            try:
                os.rename(staged_model, target)  # the commit point
                break
            except OSError:
                if not os.path.exists(target) or version is not None:
                    raise
                # Another export took this number meanwhile: give back the copy, take the next.
                if placed_keras is not None:
                    os.replace(placed_keras, staged_keras)
                    placed_keras = None
                chosen = next_version(root, name)
        placed_keras = None
    except BaseException:
        if placed_keras is not None and os.path.exists(placed_keras):
            os.remove(placed_keras)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(chosen, target, keras_path, info)


SAVED_MODEL_FILE = "saved_model.pb"


def read_export_info(saved_model_dir: str) -> dict:
    """`assets.extra/export_info.json` of a SavedModel, or {} when it has none (or a broken one)."""
    info_path = os.path.join(saved_model_dir, EXPORT_INFO)
    if not os.path.isfile(info_path):
        return {}
    try:
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class SavedModelFormat:
    """A SavedModel folder, or a TF Serving base path of versions (the highest is used)."""

    name = "saved_model"
    save = staticmethod(export_versioned)

    @staticmethod
    def detect(path: str) -> str | None:
        return locate_version(path, SAVED_MODEL_FILE) if os.path.isdir(path) else None

    @staticmethod
    def load(folder: str, precision: str | None = None, safe_mode: bool = True) -> DescriptorModel:
        """The `serving_default` signature of the SavedModel as a descriptor model."""
        if precision not in (None, "float32"):
            raise ValueError(
                "A SavedModel runs in the precision it was exported with; `precision` applies "
                f"to .keras models only. Received: precision={precision!r}"
            )
        loaded = tf.saved_model.load(folder)
        signatures = getattr(loaded, "signatures", {})
        if SERVING_DEFAULT not in signatures:
            raise ValueError(
                f"The SavedModel at {folder!r} has no {SERVING_DEFAULT!r} signature. "
                f"Received signatures: {sorted(signatures)}"
            )
        signature = signatures[SERVING_DEFAULT]
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(
                f"The {SERVING_DEFAULT!r} signature of {folder!r} must take one image tensor. "
                f"Received inputs: {sorted(inputs)}"
            )
        ((input_name, spec),) = inputs.items()
        output_names = sorted(signature.structured_outputs)
        output_name = DESCRIPTOR_OUTPUT if DESCRIPTOR_OUTPUT in output_names else output_names[0]

        def describe(images):
            # `loaded` must outlive the signature: the closure keeps it referenced.
            return loaded.signatures[SERVING_DEFAULT](**{input_name: images})[output_name]

        size = tuple(spec.shape[1:3]) if spec.shape.rank == 4 else (None, None)
        info = read_export_info(folder)
        image_size = size if all(isinstance(v, int) for v in size) else None
        if image_size is None and info.get("image_size"):
            image_size = tuple(int(v) for v in info["image_size"])
        precision = info.get("dtype_policy") or "as exported"
        return DescriptorModel(
            describe, version_label(folder), folder, "saved_model", image_size, precision
        )

    @staticmethod
    def describe(loaded: DescriptorModel) -> dict:
        return read_export_info(loaded.path)

    @staticmethod
    def fingerprint(loaded: DescriptorModel) -> str:
        """The weights hash of the Keras model it was exported from (so an index built with
        `best.keras` accepts its export), else the hash of its files."""
        info = read_export_info(loaded.path)
        return info.get("weights_fingerprint") or folder_fingerprint(
            loaded.path, skip=("assets.extra",)
        )
