"""Loading a trained model for evaluation: a `.keras` file or an exported SavedModel.

Both become an images -> descriptors callable for `extract_descriptors`: a `.keras` file is a
`keras.Model` (optionally switched to mixed precision for faster CPU/GPU inference); a SavedModel
directory (the layout written by `sare_tf.export.export_saved_model`, or a TF Serving model root
whose numbered version folders hold them, the newest being used) is called through its
`serving_default` signature (input `image` float32 `[None, None, None, 3]`, output `descriptor`).
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass
class LoadedModel:
    """A model ready for `extract_descriptors`.

    Attributes:
        model: a `keras.Model`, or a callable `images -> descriptors` (SavedModel signature).
        name: a short label for tables and plots.
        path: where it was loaded from.
        kind: "keras" or "saved_model".
        image_size: `(height, width)` fixed by the model's input, or None when any size works.
    """

    model: object
    name: str
    path: str
    kind: str
    image_size: tuple[int, int] | None = None


def _latest_version_dir(path: str) -> str | None:
    versions = [
        entry
        for entry in os.listdir(path)
        if entry.isdigit() and os.path.isfile(os.path.join(path, entry, "saved_model.pb"))
    ]
    return os.path.join(path, max(versions, key=int)) if versions else None


def _model_name(path: str) -> str:
    path = os.path.normpath(path)
    base = os.path.basename(path)
    if base.endswith(".keras"):
        return base[: -len(".keras")]
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{base}" if base.isdigit() and parent else base


def set_inference_precision(model, precision: str) -> str:
    """Switches the backbone layers of a loaded Keras model to a (mixed) precision policy.

    Layers that must stay float32 (NetVLAD, PCA whitening, the descriptor output, the input
    preprocessing) keep their policy; weights stay float32, only the computation changes.

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
    if policy == "float32":
        return policy
    for layer in model.layers:
        own_class = type(layer).__module__.startswith("keras.")
        if (
            own_class
            and layer.name != "descriptor"
            and not isinstance(layer, keras.layers.InputLayer)
            and layer.dtype_policy.name == "float32"
        ):
            layer.dtype_policy = policy
    return policy


def _load_saved_model(path: str) -> LoadedModel:
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
    image_size = size if all(isinstance(v, int) for v in size) else None
    return LoadedModel(describe, _model_name(path), path, "saved_model", image_size)


def load_descriptor_model(path: str | os.PathLike, precision: str | None = None) -> LoadedModel:
    """Loads a `.keras` model or a SavedModel directory as an images -> descriptors model.

    Args:
        path: a `.keras` file, a SavedModel directory (holding `saved_model.pb`), or a TF Serving
            model root holding numbered version folders (the highest version is used).
        precision: for `.keras` models, compute the backbone in this policy ("auto",
            "mixed_bfloat16", ...); None keeps the saved policies. SavedModels run as exported.

    Returns:
        A `LoadedModel`.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is neither a `.keras` file nor a SavedModel.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model not found. Received: path={path!r}")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            latest = _latest_version_dir(path)
            if latest is None:
                raise ValueError(
                    f"{path!r} is a directory without saved_model.pb or numbered version folders "
                    "holding one: not a SavedModel."
                )
            path = latest
        if precision not in (None, "float32"):
            raise ValueError(
                "A SavedModel runs in the precision it was exported with; `precision` applies "
                f"to .keras models only. Received: precision={precision!r}"
            )
        return _load_saved_model(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"Expected a .keras file or a SavedModel directory. Received: path={path!r}"
        )
    import keras

    # Importing the layers registers them for deserialisation.
    import sare_tf.layers  # noqa: F401

    model = keras.saving.load_model(path, compile=False)
    if len(model.input_shape) == 5:
        # A training checkpoint of the tuple model: evaluate its embedding model.
        from sare_tf.models import embedding_of

        model = embedding_of(model)
    if precision is not None:
        set_inference_precision(model, precision)
    size = tuple(model.input_shape[1:3])
    image_size = size if all(isinstance(v, int) for v in size) else None
    return LoadedModel(model, _model_name(path), path, "keras", image_size)
