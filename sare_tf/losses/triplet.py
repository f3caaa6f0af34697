"""Triplet ranking loss on squared distances (NetVLAD's loss; SARE paper eq. 1)."""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.losses._base import TupleLoss
from sare_tf.losses._distances import to_compute_dtype, tuple_squared_distances


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"`margin` must be a non-negative number. Received: margin={margin!r}")
    return float(margin)


def triplet_ranking_loss(y_pred, margin: float = 0.1):
    """Triplet ranking loss per tuple: `mean_i max(0, margin + dp - dn_i)`.

    With `dp = |q - p|^2` and `dn_i = |q - n_i|^2`. A negative farther than
    `sqrt(dp + margin)` contributes exactly nothing, neither loss nor gradient.

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives).
        margin: m in eq. 1.

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).
    """
    margin = _check_margin(margin)
    positive_sq, negatives_sq = tuple_squared_distances(to_compute_dtype(y_pred))
    return ops.mean(ops.relu(margin + positive_sq[:, None] - negatives_sq), axis=-1)


@keras.saving.register_keras_serializable(package="sare_tf")
class TripletRankingLoss(TupleLoss):
    """Triplet ranking loss `mean_i max(0, m + |q-p|^2 - |q-n_i|^2)`, mean over tuples.

    Args:
        margin: m (0.1 in NetVLAD and the SARE paper's baseline).
        name, reduction, dtype: as in `keras.losses.Loss` (dtype float32 or float64).

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Reference:
        Arandjelovic et al., NetVLAD, CVPR 2016; Liu et al., SARE, ICCV 2019, eq. 1.
    """

    def __init__(self, margin: float = 0.1, name=None, reduction="sum_over_batch_size", dtype=None):
        self.margin = _check_margin(margin)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return triplet_ranking_loss(y_pred, margin=self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config
