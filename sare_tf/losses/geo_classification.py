"""Geographic classification (Vo et al., ICCV 2017, as the SARE paper's appendix describes it):
a fully connected layer (weights 0.01 x N(0, 1)) after NetVLAD predicts the 25 m cell of each
training image, trained with the softmax log-loss `logsumexp(z) - z_label`. The descriptor is
still the NetVLAD output: the head exists only for training (`sare_tf.model.GeoClassifier`) and is
never part of the saved or exported embedding model.
"""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.losses._base import float32_loss_dtype


def geo_classification_loss(labels, logits):
    """Softmax log-loss per image: `logsumexp(logits) - logits[label]`, in float32 (or float64).

    Args:
        labels: `[B]` int cell labels.
        logits: `[B, C]` head outputs.

    Returns:
        `[B]` losses.
    """
    logits = ops.convert_to_tensor(logits)
    dtype = "float64" if keras.backend.standardize_dtype(logits.dtype) == "float64" else "float32"
    logits = ops.cast(logits, dtype)  # also turns a variable into a tensor
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    picked = ops.sum(logits * ops.one_hot(labels, logits.shape[-1], dtype=dtype), axis=-1)
    return ops.logsumexp(logits, axis=-1) - picked


@keras.saving.register_keras_serializable(package="sare_tf")
class GeoClassificationLoss(keras.losses.Loss):
    """Softmax log-loss of the geographic cell, mean over images.

    Call arguments:
        y_true: `[B]` int cell labels (`sare_tf.data.cell_labels.assign_cells`).
        y_pred: `[B, C]` logits of the head.

    Reference:
        Vo, Jacobs and Hays, "Revisiting IM2GPS in the Deep Learning Era", ICCV 2017; Liu et al.,
        SARE, ICCV 2019, Sec. 7.6 and appendix.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=float32_loss_dtype(dtype))

    def call(self, y_true, y_pred):
        return geo_classification_loss(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self.dtype
        return config
