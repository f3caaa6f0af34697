"""Lifted structured loss, smooth form (Oh Song et al., CVPR 2016, eq. 4), on one tuple.

For the tuple's positive pair (q, p) and its negatives n_i, with Euclidean distances D:
`J = log(sum_i exp(alpha - D_q,ni) + sum_i exp(alpha - D_p,ni)) + D_q,p` and the loss
`0.5 * max(0, J)^2` (pairs with J < 0 are pruned: they contribute nothing). The log-sum-exp
runs over the 2N terms at once (finite for any distance); distances use `safe_norm` (zero
gradient at coincident embeddings instead of NaN). alpha = 1 as in that paper.
"""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.losses._base import TupleLoss
from sare_tf.losses._distances import safe_norm, split_tuples, to_compute_dtype


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0:
        raise ValueError(f"`margin` must be a non-negative number. Received: margin={margin!r}")
    return float(margin)


def lifted_structured_loss(y_pred, margin: float = 1.0):
    """Lifted structured loss per tuple: `0.5 * max(0, J)^2`.

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives).
        margin: alpha in eq. 4.

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).
    """
    margin = _check_margin(margin)
    query, positive, negatives = split_tuples(to_compute_dtype(y_pred))
    query_positive = safe_norm(ops.sum(ops.square(positive - query), axis=-1))
    query_negatives = safe_norm(ops.sum(ops.square(negatives - query[:, None, :]), axis=-1))
    positive_negatives = safe_norm(ops.sum(ops.square(negatives - positive[:, None, :]), axis=-1))
    terms = margin - ops.concatenate([query_negatives, positive_negatives], axis=-1)
    objective = ops.logsumexp(terms, axis=-1) + query_positive
    return 0.5 * ops.square(ops.relu(objective))


@keras.saving.register_keras_serializable(package="sare_tf")
class LiftedStructuredLoss(TupleLoss):
    """Lifted structured loss (smooth, eq. 4 of Oh Song et al.), mean over tuples.

    Args:
        margin: alpha (1.0 as in that paper).
        name, reduction, dtype: as in `keras.losses.Loss` (dtype float32 or float64).

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Reference:
        Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR
        2016, eq. 4; Liu et al., SARE, ICCV 2019, Sec. 7.6.
    """

    def __init__(self, margin: float = 1.0, name=None, reduction="sum_over_batch_size", dtype=None):
        self.margin = _check_margin(margin)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return lifted_structured_loss(y_pred, margin=self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config
