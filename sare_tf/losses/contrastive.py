"""Contrastive loss on plain distances (Hadsell et al.; SARE paper eq. 2)."""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.losses._base import TupleLoss
from sare_tf.losses._distances import safe_norm, to_compute_dtype, tuple_squared_distances


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
        raise ValueError(f"`margin` must be a positive number. Received: margin={margin!r}")
    return float(margin)


def contrastive_loss(y_pred, margin: float = 0.7):
    """Contrastive loss per tuple: `0.5 * dp + mean_i 0.5 * max(0, margin - sn_i)^2`.

    With `dp = |q - p|^2` and plain distances `sn_i = |q - n_i|`: the positive is always
    attracted, a negative is repelled only while closer than `margin` (tau in eq. 2) and
    gets exactly zero gradient beyond it.

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives).
        margin: tau in eq. 2.

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).
    """
    margin = _check_margin(margin)
    positive_sq, negatives_sq = tuple_squared_distances(to_compute_dtype(y_pred))
    shortfall = ops.relu(margin - safe_norm(negatives_sq))
    return 0.5 * positive_sq + ops.mean(0.5 * ops.square(shortfall), axis=-1)


@keras.saving.register_keras_serializable(package="sare_tf")
class ContrastiveLoss(TupleLoss):
    """Contrastive loss `0.5 |q-p|^2 + mean_i 0.5 max(0, tau - |q-n_i|)^2`, mean over tuples.

    Args:
        margin: tau (0.7 as in the SARE paper's comparison).
        name, reduction, dtype: as in `keras.losses.Loss` (dtype float32 or float64).

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Reference:
        Hadsell, Chopra and LeCun, CVPR 2006; Radenovic et al., ECCV 2016; Liu et al., SARE,
        ICCV 2019, eq. 2.
    """

    def __init__(self, margin: float = 0.7, name=None, reduction="sum_over_batch_size", dtype=None):
        self.margin = _check_margin(margin)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_pred, margin=self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config
