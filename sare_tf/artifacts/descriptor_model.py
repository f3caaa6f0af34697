"""What every loaded model is to the code that computes descriptors, whatever its file format.

`DescriptorModel` is the model (a Keras model, or a callable `images -> descriptors` of a
SavedModel signature or another runtime) with the image size it records, a short name and its
precision. Each file format (`sare_tf.artifacts.*_format`) loads itself into one;
`sare_tf.artifacts.load_descriptor_model` picks the format.

The image size a model was trained at is kept *in the model* (`PlaceEmbedding.image_size`,
stored by its `ImagePreprocessing` layer, the way KerasHub's `ImageConverter` keeps its size);
exports record it in their info file. `resolve_image_size` is the one rule for which size a
command uses: the one asked for (checked against a fixed input), else the model's own, else none
(native image sizes) or an error where a size is required.
"""

from __future__ import annotations

import dataclasses

import keras

from sare_tf.image_size import check_image_size
from sare_tf.layers import ImagePreprocessing
from sare_tf.model import PlaceEmbedding, embedding_of
from sare_tf.model.compute_policy import backbone_policy, set_backbone_policy
from sare_tf.precision import resolve_precision


@dataclasses.dataclass
class DescriptorModel:
    """A model ready for `sare_tf.encoding.encode`.

    Attributes:
        model: a `keras.Model`, or a callable `images -> descriptors` (a SavedModel signature).
        name: a short label for tables and plots.
        path: where it was loaded from (None for an in-memory model).
        kind: the artifact format: "keras", "saved_model", "onnx" or "litert".
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


def _embedding_or_none(model):
    try:
        return embedding_of(model)
    except ValueError:
        return None


def _fixed_input_size(model) -> tuple:
    """`(height, width)` of a Keras model's image input (None where any size works)."""
    if not isinstance(model, keras.Model) or not model.inputs:
        return (None, None)
    model = _embedding_or_none(model) or model
    return tuple(model.inputs[0].shape[1:3])


def stored_image_size(model) -> tuple[int, int] | None:
    """The `(height, width)` a Keras model knows: its fixed input, else the size it stores."""
    embedding = _embedding_or_none(model) or model
    if isinstance(embedding, PlaceEmbedding):
        return embedding.image_size
    fixed = _fixed_input_size(embedding)
    if all(isinstance(v, int) for v in fixed):
        return int(fixed[0]), int(fixed[1])
    layer = next(
        (lay for lay in getattr(embedding, "layers", ()) if isinstance(lay, ImagePreprocessing)),
        None,
    )
    return None if layer is None else layer.image_size


def store_image_size(model, image_size) -> None:
    """Records the training image size in the model (saved with it in `.keras` files)."""
    embedding = embedding_of(model)
    if isinstance(embedding, PlaceEmbedding):
        embedding.image_size = image_size
        return
    layer = next((lay for lay in embedding.layers if isinstance(lay, ImagePreprocessing)), None)
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


def set_inference_precision(model, precision: str) -> str:
    """Switches the backbone of a loaded Keras model to a precision policy (either way).

    sare_tf's own layers keep float32 maths under any policy and the "descriptor" output stays
    float32; weights stay float32, only the computation changes.

    Args:
        model: a `keras.Model` (modified in place).
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16" (see
            `sare_tf.precision.resolve_precision`).

    Returns:
        The policy name that was applied.
    """
    return set_backbone_policy(model, resolve_precision(precision))


def compute_precision(model) -> str:
    """The policy most layers of a Keras model compute in ("float32", "mixed_bfloat16", ...)."""
    return backbone_policy(model)


def describe_model(model) -> dict:
    """What a sare_tf embedding model is: backbone, aggregator, sizes, precision.

    A `PlaceEmbedding` answers itself; a plain functional model of a custom backbone is
    described from its layers, with backbone "custom".
    """
    embedding = embedding_of(model)
    if isinstance(embedding, PlaceEmbedding):
        return embedding.describe()
    netvlad = embedding.get_layer("netvlad")
    names = {layer.name for layer in embedding.layers}
    size = stored_image_size(embedding)
    return {
        "backbone": "custom",
        "feature_layer": None,
        "aggregator": "netvlad",
        "num_clusters": int(netvlad.num_clusters),
        "pca_dim": int(embedding.get_layer("pca_whitening").output_dim)
        if "pca_whitening" in names
        else None,
        "descriptor_dim": int(embedding.outputs[0].shape[-1]),
        "image_size": None if size is None else list(size),
        "precision": backbone_policy(embedding),
    }
