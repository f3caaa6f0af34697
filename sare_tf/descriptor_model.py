"""What a descriptor model is, in one place: the model, its image size, name and precision.

Every command that computes descriptors (evaluate, export, saliency, the index and server) gets its
model from `load_descriptor_model(path)`, which reads all three places a model can live:

- a `.keras` file (an embedding model, or a training checkpoint of the tuple model, which is
  unwrapped to the embedding model inside it);
- a SavedModel folder (`saved_model.pb`, as `sare_tf.export` writes it), called through its
  `serving_default` signature;
- a TF Serving base path (numbered version folders holding SavedModels; the highest is used).

The image size a model was trained at is kept *in the model*: `ImagePreprocessing(image_size=...)`
stores it in its config (the way KerasHub's `ImageConverter` keeps its size), `sare-tf train`
sets it, and the SavedModel export records it in `assets.extra/export_info.json`.
`resolve_image_size` is the one rule for which size a command uses: the one asked for (checked
against a fixed input), else the model's own, else none (native image sizes) or an error where a
size is required.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

EXPORT_INFO = os.path.join("assets.extra", "export_info.json")
PREPROCESSING_LAYER = "preprocess"


@dataclasses.dataclass
class DescriptorModel:
    """A model ready for `sare_tf.encoding.encode`.

    Attributes:
        model: a `keras.Model`, or a callable `images -> descriptors` (a SavedModel signature).
        name: a short label for tables and plots.
        path: where it was loaded from (None for an in-memory model).
        kind: "keras", "saved_model", or the runtime of an export ("onnx", "litert").
        image_size: `(height, width)` the model was trained at (or its fixed input), or None when
            the model does not know it.
        precision: the policy the backbone computes in ("float32", "mixed_bfloat16", ...); for a
            SavedModel, the policy it was exported with, or "as exported" when not recorded.
    """

    model: object
    name: str
    path: str | None
    kind: str
    image_size: tuple[int, int] | None = None
    precision: str = "float32"


# --- image size -----------------------------------------------------------------------------


def _preprocessing_layer(model):
    from sare_tf.layers import ImagePreprocessing

    for layer in getattr(model, "layers", ()):
        if isinstance(layer, ImagePreprocessing):
            return layer
    return None


def _fixed_input_size(model) -> tuple:
    """`(height, width)` of a Keras model's image input (None where any size works)."""
    import keras

    if not isinstance(model, keras.Model) or not model.inputs:
        return (None, None)
    from sare_tf.models import embedding_of

    try:
        model = embedding_of(model)
    except ValueError:
        pass  # not a sare_tf model: its own input
    return tuple(model.inputs[0].shape[1:3])


def stored_image_size(model) -> tuple[int, int] | None:
    """The `(height, width)` a Keras model knows: its fixed input, else the size it stores."""
    fixed = _fixed_input_size(model)
    if all(isinstance(v, int) for v in fixed):
        return int(fixed[0]), int(fixed[1])
    from sare_tf.models import embedding_of

    try:
        layer = _preprocessing_layer(embedding_of(model))
    except ValueError:
        layer = _preprocessing_layer(model)
    return None if layer is None else layer.image_size


def store_image_size(model, image_size) -> None:
    """Records the training image size in the model (saved with it in `.keras` files)."""
    from sare_tf.image_size import check_image_size
    from sare_tf.models import embedding_of

    layer = _preprocessing_layer(embedding_of(model))
    if layer is None:
        raise ValueError(
            f"Model {model.name!r} has no ImagePreprocessing layer to record its image size in."
        )
    layer.image_size = check_image_size(image_size)


def resolve_image_size(model, image_size=None, required: bool = False, purpose: str = ""):
    """The `(height, width)` a command uses for `model`.

    Args:
        model: a `keras.Model`, a `DescriptorModel`, or a callable (knows no size).
        image_size: the size asked for (CLI `--image-size`), or None.
        required: raise when neither the caller nor the model gives a size.
        purpose: what the size is for, for the error message (e.g. "serve_jpeg resizes to it").

    Returns:
        `(height, width)`, or None when no size is known and none is required.

    Raises:
        ValueError: the size asked for disagrees with the model's fixed input, or none is known
            and `required`.
    """
    from sare_tf.image_size import check_image_size

    requested = check_image_size(image_size)
    if isinstance(model, DescriptorModel):
        fixed, known = _fixed_input_size(model.model), model.image_size
    else:
        fixed, known = _fixed_input_size(model), stored_image_size(model)
    if requested is not None:
        if any(k is not None and k != r for k, r in zip(fixed, requested, strict=True)):
            raise ValueError(
                f"The model takes {fixed[0]}x{fixed[1]} images only (fixed input size {fixed}); "
                f"`image_size` disagrees. Received: image_size={requested}"
            )
        return requested
    if known is None and required:
        reason = f" ({purpose})" if purpose else ""
        raise ValueError(
            f"The model does not record the image size it was trained at{reason}: pass "
            "image_size=(height, width) (CLI: --image-size H W), normally the training size. "
            "Models trained by `sare-tf train` record it. Received: image_size=None"
        )
    return known


# --- precision --------------------------------------------------------------------------------


def set_inference_precision(model, precision: str) -> str:
    """Switches the Keras-core layers of a loaded model to a precision policy (either way).

    sare_tf's own layers (NetVLAD, PCA whitening, preprocessing) decide their dtype themselves
    (`sare_tf.layers` keep float32 maths under any policy), and the "descriptor" output stays
    float32; weights stay float32, only the computation changes.

    Args:
        model: a `keras.Model` (modified in place).
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16" (see
            `sare_tf.precision.resolve_precision`).

    Returns:
        The policy name that was applied.
    """
    import keras

    from sare_tf.precision import resolve_precision

    policy = resolve_precision(precision)
    switchable = {"float32", "mixed_bfloat16", "mixed_float16"}
    for layer in model.layers:
        own_class = type(layer).__module__.startswith("keras.")
        if (
            own_class
            and layer.name != "descriptor"
            and not isinstance(layer, keras.layers.InputLayer)
            and layer.dtype_policy.name in switchable
        ):
            layer.dtype_policy = policy
    return policy


def compute_precision(model) -> str:
    """The policy most layers of a Keras model compute in ("float32", "mixed_bfloat16", ...)."""
    import collections

    counts = collections.Counter(
        layer.dtype_policy.name for layer in model.layers if hasattr(layer, "dtype_policy")
    )
    mixed = [name for name in counts if name.startswith("mixed_")]
    return max(mixed, key=counts.__getitem__) if mixed else "float32"


# --- what the model is ---------------------------------------------------------------------------


def describe_model(model) -> dict:
    """What a sare_tf embedding model is: backbone, NetVLAD K, PCA size, descriptor size, image size.

    The backbone is recognised by the layer feeding NetVLAD (name and channels of a
    `sare_tf.models.BACKBONES` entry); anything else is "custom".
    """
    from sare_tf.models import BACKBONES, embedding_of, netvlad_layer

    embedding = embedding_of(model)
    netvlad = netvlad_layer(embedding)
    feature_map = netvlad.input
    feeding = None
    for layer in embedding.layers:
        try:
            if layer.output is feature_map:
                feeding = layer.name
                break
        except (AttributeError, ValueError):
            continue
    channels = int(feature_map.shape[-1])
    backbone = next(
        (
            name
            for name, spec in BACKBONES.items()
            if spec.output_layer == feeding and spec.channels == channels
        ),
        "custom",
    )
    names = {layer.name for layer in embedding.layers}
    pca_dim = (
        int(embedding.get_layer("pca_whitening").output_dim) if "pca_whitening" in names else None
    )
    size = stored_image_size(embedding)
    return {
        "backbone": backbone,
        "feature_layer": feeding,
        "num_clusters": int(netvlad.num_clusters),
        "pca_dim": pca_dim,
        "descriptor_dim": int(embedding.outputs[0].shape[-1]),
        "image_size": None if size is None else list(size),
        "precision": compute_precision(embedding),
    }


# --- loading ---------------------------------------------------------------------------------------


def latest_version_dir(path: str) -> str | None:
    """The highest numbered version folder holding a SavedModel (TF Serving's rule), or None."""
    versions = [
        entry
        for entry in os.listdir(path)
        if entry.isdigit() and os.path.isfile(os.path.join(path, entry, "saved_model.pb"))
    ]
    return os.path.join(path, max(versions, key=int)) if versions else None


def locate_model(path) -> tuple[str, str]:
    """`(path, kind)`: a `.keras` file, the SavedModel folder to load (TF Serving versions scanned),
    or the version folder of an ONNX or LiteRT export (kind "onnx" or "litert").

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is neither a `.keras` file nor a SavedModel (or a folder of versions).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model not found. Received: path={path!r}")
    if path.endswith((".onnx", ".tflite")) or (
        os.path.isdir(path) and latest_version_dir(path) is None
    ):
        from sare_tf.runtimes.litert_runtime import locate_litert
        from sare_tf.runtimes.onnx_runtime import locate_onnx

        for kind, locate in (("onnx", locate_onnx), ("litert", locate_litert)):
            folder = locate(path)
            if folder is not None:
                return folder, kind
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return path, "saved_model"
        latest = latest_version_dir(path)
        if latest is None:
            raise ValueError(
                f"{path!r} is a directory without saved_model.pb or numbered version folders "
                "holding one: not a SavedModel."
            )
        return latest, "saved_model"
    if not path.endswith(".keras"):
        raise ValueError(
            f"Expected a .keras file or a SavedModel directory. Received: path={path!r}"
        )
    return path, "keras"


def read_keras_model(path, safe_mode: bool = True):
    """Loads a `.keras` file written by sare_tf (or any Keras 3 model), refusing what is not one.

    A tuple-model checkpoint is unwrapped to its embedding model.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a `.keras` archive (a zip with `config.json`), or Keras cannot
            rebuild the model from it (the message names the file and Keras's reason).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        names = set()
    if "config.json" not in names:
        raise ValueError(
            f"{path} is not a valid .keras file: a .keras model is a zip archive holding "
            "config.json and model.weights.h5."
        )
    import keras

    import sare_tf.layers  # noqa: F401  (registers sare_tf's layers for deserialisation)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ValueError(f"{path}: the .keras file could not be loaded: {error}") from error
    if len(model.inputs) == 1 and len(model.inputs[0].shape) == 5:
        from sare_tf.models import embedding_of

        model = embedding_of(model)
    return model


def _model_name(path: str) -> str:
    path = os.path.normpath(path)
    base = os.path.basename(path)
    if base.endswith(".keras"):
        return base[: -len(".keras")]
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{base}" if base.isdigit() and parent else base


def _read_export_info(saved_model_dir: str) -> dict:
    info_path = os.path.join(saved_model_dir, EXPORT_INFO)
    if not os.path.isfile(info_path):
        return {}
    try:
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _load_saved_model(path: str) -> DescriptorModel:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ValueError(
            f"The SavedModel at {path!r} has no 'serving_default' signature. "
            f"Received signatures: {sorted(signatures)}"
        )
    signature = signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(
            f"The 'serving_default' signature of {path!r} must take one image tensor. "
            f"Received inputs: {sorted(inputs)}"
        )
    ((input_name, spec),) = inputs.items()
    output_names = sorted(signature.structured_outputs)
    output_name = "descriptor" if "descriptor" in output_names else output_names[0]

    def describe(images):
        # `loaded` must outlive the signature: the closure keeps it referenced.
        return loaded.signatures["serving_default"](**{input_name: images})[output_name]

    size = tuple(spec.shape[1:3]) if spec.shape.rank == 4 else (None, None)
    info = _read_export_info(path)
    image_size = size if all(isinstance(v, int) for v in size) else None
    if image_size is None and info.get("image_size"):
        image_size = tuple(int(v) for v in info["image_size"])
    precision = info.get("dtype_policy") or "as exported"
    return DescriptorModel(describe, _model_name(path), path, "saved_model", image_size, precision)


# Exported artefacts run by another runtime than TensorFlow (`sare-tf export --format ...`).
RUNTIME_EXPORTS = ("onnx", "litert")
# Which model kinds each `--runtime` choice runs.
RUNTIME_KINDS = {"tf": ("keras", "saved_model"), "onnx": ("onnx",), "litert": ("litert",)}


def _runtime_model(kind: str, folder: str):
    if kind == "onnx":
        from sare_tf.runtimes.onnx_runtime import OnnxDescriptorModel

        return OnnxDescriptorModel(folder)
    from sare_tf.runtimes.litert_runtime import LiteRTDescriptorModel

    return LiteRTDescriptorModel(folder)


def check_runtime(runtime: str | None, loaded) -> None:
    """Refuses models that are not `runtime`'s artefacts (`--runtime tf|onnx|litert`; None: any).

    `loaded`: one `DescriptorModel` or several.
    """
    if runtime is None:
        return
    models = loaded if isinstance(loaded, (list, tuple)) else [loaded]
    wrong = [f"{m.path} ({m.kind})" for m in models if m.kind not in RUNTIME_KINDS[runtime]]
    if wrong:
        raise ValueError(
            f"--runtime {runtime} but these models are not {runtime} artefacts: {wrong}. "
            "Export one with sare-tf export --format onnx|litert, or pass the .keras / "
            "SavedModel for --runtime tf."
        )


def load_descriptor_model(
    path: str | os.PathLike, precision: str | None = None, safe_mode: bool = True
) -> DescriptorModel:
    """Loads a `.keras` model, a SavedModel or a TF Serving base path as a descriptor model.

    Args:
        path: a `.keras` file, a SavedModel directory (holding `saved_model.pb`), or a TF Serving
            model root holding numbered version folders (the highest version is used).
        precision: for `.keras` models, compute the backbone in this policy ("auto",
            "mixed_bfloat16", ...); None keeps the saved policies. SavedModels run as exported.
        safe_mode: Keras's `safe_mode` (refuses lambda layers' pickled code); keep True for files
            from elsewhere.

    Returns:
        A `DescriptorModel` with the image size the model records.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is not a valid `.keras` file or SavedModel.

    Example:
        >>> loaded = load_descriptor_model("runs/train/best.keras")
        >>> loaded.image_size
        (480, 640)
    """
    path, kind = locate_model(path)
    if kind in RUNTIME_EXPORTS:
        if precision not in (None, "float32"):
            raise ValueError(
                f"A {kind} export runs as exported ({path}); `precision` applies to .keras models "
                f"only. Received: precision={precision!r}"
            )
        runtime = _runtime_model(kind, path)
        quantized = runtime.info.get("quantize", "none")
        return DescriptorModel(
            runtime, _model_name(path), path, kind, runtime.image_size,
            f"{'float32' if quantized == 'none' else quantized} ({kind})",
        )  # fmt: skip
    if kind == "saved_model":
        if precision not in (None, "float32"):
            raise ValueError(
                "A SavedModel runs in the precision it was exported with; `precision` applies "
                f"to .keras models only. Received: precision={precision!r}"
            )
        return _load_saved_model(path)
    model = read_keras_model(path, safe_mode=safe_mode)
    if precision is not None:
        set_inference_precision(model, precision)
    return DescriptorModel(
        model,
        _model_name(path),
        path,
        "keras",
        stored_image_size(model),
        compute_precision(model),
    )


# --- fingerprint ----------------------------------------------------------------------------------


def weights_fingerprint(model) -> str:
    """sha256 of a Keras model's weights (shapes and values, in order): "sha256:<hex>"."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return f"sha256:{digest.hexdigest()}"


def _files_fingerprint(folder: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        if os.path.relpath(directory, folder).startswith("assets.extra"):
            continue
        for name in sorted(names):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def model_fingerprint(loaded: DescriptorModel) -> str:
    """What identifies the descriptors a model computes, whatever file it came from.

    A Keras model: the hash of its weights. A SavedModel exported by sare_tf: the weights hash
    of the Keras model it was exported from (recorded in `export_info.json`), so that an index
    built with `best.keras` accepts its exported SavedModel; any other SavedModel: the hash of
    its files.
    """
    if loaded.kind == "keras":
        return weights_fingerprint(loaded.model)
    if loaded.kind in RUNTIME_EXPORTS:
        # Quantized descriptors differ from the float model's: an index of one refuses the other.
        info = loaded.model.info
        quantized = info.get("quantize", "none")
        return info["weights_fingerprint"] + ("" if quantized == "none" else f":{quantized}")
    info = _read_export_info(loaded.path)
    return info.get("weights_fingerprint") or _files_fingerprint(loaded.path)
