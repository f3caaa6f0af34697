"""What a saliency map explains: the similarity of an image's descriptor to a reference descriptor.

Retrieval ranks database images by the dot product of unit descriptors, so the quantity worth
explaining for a query is `s = <f(query), f(reference)>`, the reference being the top
retrieved database image (or any image the user names). tf-keras-vis explains a scalar
*score* of a model output; this module turns an embedding model into a model whose output
carries `s`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="sare_tf")
class PairedSimilarity(keras.layers.Layer):
    """Two-way similarity `[z, -z]`, `z = scale * (s - offset)`, of descriptors to references.

    Row `n` of a batch is compared with reference `n mod R` (R = `num_references`):
    `s_n = <inputs[n], references[n mod R]>`. A batch of R images therefore pairs image i with
    reference i, and so does any batch made of whole copies of that batch in order, which is
    how tf-keras-vis feeds SmoothGrad samples (one copy per noise sample) and Score-CAM masks
    (channel-major, `channels * R` rows, predicted in batches of a multiple of R).

    The output is two-way because Score-CAM weights each mask by `softmax(model output)`:
    `softmax([z, -z])[0] = sigmoid(2 z)` rises with s, whereas a softmax over one value would
    be the constant 1. With the defaults (offset 0, scale 1) the first column is s itself,
    which the gradient methods explain. References, offsets and scale are non-trainable
    weights, set with `set_references`, so one model serves many batches without retracing.

    Computes in float32 under any dtype policy.

    Args:
        num_references: R, the number of reference descriptors.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[N, D]` unit descriptors, N a multiple of R.

    Returns:
        `[N, 2]` float32 `[z_n, -z_n]`.
    """

    def __init__(self, num_references: int, **kwargs):
        if not isinstance(num_references, int) or num_references < 1:
            raise ValueError(
                "`num_references` must be a positive integer. "
                f"Received: num_references={num_references!r}"
            )
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_references = num_references

    def build(self, input_shape):
        depth = input_shape[-1]
        if depth is None:
            raise ValueError(
                f"PairedSimilarity needs a known descriptor size. Received: input_shape={input_shape}"
            )
        self.references = self.add_weight(
            name="references",
            shape=(self.num_references, int(depth)),
            initializer="zeros",
            trainable=False,
        )
        self.offsets = self.add_weight(
            name="offsets", shape=(self.num_references,), initializer="zeros", trainable=False
        )
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones", trainable=False)

    def set_references(self, reference_descriptors, offsets=None, scale: float = 1.0) -> None:
        """Sets the `[R, D]` references, the `[R]` offsets (default 0) and the scale (default 1)."""
        reference_descriptors = np.asarray(reference_descriptors, dtype="float32")
        if reference_descriptors.shape != tuple(self.references.shape):
            raise ValueError(
                f"`reference_descriptors` must have shape {tuple(self.references.shape)}. "
                f"Received: shape={reference_descriptors.shape}"
            )
        offsets = np.zeros(self.num_references) if offsets is None else np.asarray(offsets)
        if offsets.shape != (self.num_references,):
            raise ValueError(
                f"`offsets` must have shape ({self.num_references},). Received: shape={offsets.shape}"
            )
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"`scale` must be a positive number. Received: scale={scale}")
        self.references.assign(reference_descriptors)
        self.offsets.assign(offsets.astype("float32"))
        self.scale.assign(float(scale))

    def call(self, inputs):
        descriptors = ops.cast(inputs, "float32")
        rows = ops.shape(descriptors)[0]
        # A batch that is not made of whole copies of the R references would silently pair
        # images with the wrong references.
        tf.debugging.assert_equal(
            rows % self.num_references,
            0,
            message=f"PairedSimilarity: batch size must be a multiple of {self.num_references}",
        )
        grouped = ops.reshape(descriptors, (-1, self.num_references, self.references.shape[-1]))
        similarity = ops.sum(grouped * self.references[None], axis=-1)
        z = ops.reshape(self.scale * (similarity - self.offsets[None]), (-1, 1))
        return ops.concatenate([z, -z], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update({"num_references": self.num_references})
        return config


def similarity_score(outputs):
    """tf-keras-vis score: the first column of a `PairedSimilarity` output.

    For the gradient methods this is s. Score-CAM passes `softmax(outputs)` instead, and the
    first column is then `sigmoid(2 z)` (see `saliency_maps` for the offset and scale it uses).
    """
    return outputs[:, 0]


def similarity_model(embedding_model: keras.Model, reference_descriptors) -> keras.Model:
    """Extends image -> descriptor to image -> `[s, -s]`, the similarity to the references.

    The result is one flat functional graph over the embedding model's own layers (no nested
    model), so an intermediate layer such as `block5_conv3` can be read out by Grad-CAM++ and
    Score-CAM. Row n of a batch is scored against `reference_descriptors[n mod R]`; the
    `PairedSimilarity` layer is named "paired_similarity".

    Args:
        embedding_model: a functional model from images to unit descriptors `[N, D]`.
        reference_descriptors: `[R, D]` descriptors to compare with.

    Returns:
        A `keras.Model` from the embedding model's input to `[N, 2]` float32.
    """
    reference_descriptors = np.asarray(reference_descriptors, dtype="float32")
    depth = embedding_model.output_shape[-1]
    if reference_descriptors.ndim != 2 or reference_descriptors.shape[1] != depth:
        raise ValueError(
            f"`reference_descriptors` must be [R, {depth}] for model {embedding_model.name!r}. "
            f"Received: shape={reference_descriptors.shape}"
        )
    if not np.all(np.isfinite(reference_descriptors)):
        raise ValueError("`reference_descriptors` contain NaN or infinite values.")
    layer = PairedSimilarity(len(reference_descriptors), name="paired_similarity")
    outputs = layer(embedding_model.output)
    layer.set_references(reference_descriptors)
    return keras.Model(embedding_model.inputs, outputs, name=f"{embedding_model.name}_similarity")
