"""The Keras `Loss` base shared by the tuple losses: float32 maths, `y_true` ignored."""

from __future__ import annotations

import keras
from keras import ops


def float32_loss_dtype(dtype=None) -> str:
    """Returns the dtype a tuple loss computes and reduces in.

    `None` means `keras.config.floatx()`. Half-precision requests (`"bfloat16"`, `"float16"`,
    `"mixed_bfloat16"`, ...) become float32, so that a loss built under a mixed policy still
    computes in float32; float64 is honoured.
    """
    policy = keras.dtype_policies.get(dtype if dtype is not None else keras.config.floatx())
    if policy.compute_dtype == "float64":
        return "float64"
    return "float32"


class TupleLoss(keras.losses.Loss):
    """Base of the losses on `[B, 2+N, D]` tuple embeddings; subclasses implement `call`.

    `y_true` is ignored (the tuple layout carries the supervision) and may be `None`, so
    `model.fit` works with datasets that yield images only. Keras converts `y_pred` to this
    loss's dtype before `call`: float32 by default (half-precision inputs are upcast, float64
    inputs are downcast); pass `dtype="float64"` to keep float64.

    Args:
        name: loss name (defaults to the snake-case class name).
        reduction: Keras reduction over the per-tuple losses; the default
            `"sum_over_batch_size"` is the mean over tuples.
        dtype: `"float32"` (default) or `"float64"`; half precision is replaced by float32.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=float32_loss_dtype(dtype))

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            y_true = ops.zeros((ops.shape(y_pred)[0],), dtype=self.dtype)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self.dtype
        return config
