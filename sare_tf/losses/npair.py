"""N-pair and angular losses: `log(1 + sum_i exp(s_i))` over one logit per negative.

The two share the pipeline and differ only in the logit of negative i (as the SARE family shares
its pipeline and differs in the kernel), computed on the tuple's inner products:

- N-pair (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
  NeurIPS 2016, eq. 3, the (N+1)-tuplet loss): `s_i = f_q . f_ni - f_q . f_p`.
- Angular, N-pair form (Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017, eq. 8):
  `s_i = 4 tan^2(alpha) (f_q + f_p) . f_ni - 2 (1 + tan^2(alpha)) f_q . f_p`, alpha = 45 degrees
  in the SARE paper's comparison (Sec. 7.6).

`log(1 + sum_i exp(s_i))` is computed as `softplus(logsumexp(s))`: finite for any logits, and
accurate in float32 when the sum is tiny (where `log(1 + x)` would round x away).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from sare_tf.losses._base import TupleLoss
from sare_tf.losses._distances import split_tuples, to_compute_dtype


def log_one_plus_sum_exp(logits):
    """`log(1 + sum_i exp(logits[..., i]))` over the last axis, without overflow."""
    return ops.softplus(ops.logsumexp(logits, axis=-1))


def npair_logits(y_pred):
    """`[B, N]` logits `f_q . f_ni - f_q . f_p` of the N-pair loss."""
    query, positive, negatives = split_tuples(to_compute_dtype(y_pred))
    query_positive = ops.sum(query * positive, axis=-1)
    query_negatives = ops.sum(negatives * query[:, None, :], axis=-1)
    return query_negatives - query_positive[:, None]


def npair_loss(y_pred):
    """N-pair loss per tuple: `log(1 + sum_i exp(f_q . f_ni - f_q . f_p))` (Sohn 2016, eq. 3).

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives).

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).
    """
    return log_one_plus_sum_exp(npair_logits(y_pred))


def _check_alpha(alpha_degrees) -> float:
    if isinstance(alpha_degrees, bool) or not isinstance(alpha_degrees, int | float):
        raise ValueError(f"`alpha_degrees` must be a number. Received: {alpha_degrees!r}")
    if not 0 < alpha_degrees < 90:
        raise ValueError(
            f"`alpha_degrees` must lie strictly between 0 and 90. Received: {alpha_degrees!r}"
        )
    return float(alpha_degrees)


def angular_logits(y_pred, alpha_degrees: float = 45.0):
    """`[B, N]` logits `4 tan^2(a) (f_q + f_p) . f_ni - 2 (1 + tan^2(a)) f_q . f_p`."""
    tan_squared = math.tan(math.radians(_check_alpha(alpha_degrees))) ** 2
    query, positive, negatives = split_tuples(to_compute_dtype(y_pred))
    pair_to_negatives = ops.sum(negatives * (query + positive)[:, None, :], axis=-1)
    query_positive = ops.sum(query * positive, axis=-1)
    return (
        4.0 * tan_squared * pair_to_negatives - 2.0 * (1.0 + tan_squared) * query_positive[:, None]
    )


def angular_loss(y_pred, alpha_degrees: float = 45.0):
    """Angular loss per tuple, N-pair form (Wang et al. 2017, eq. 8).

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives).
        alpha_degrees: the angle bound alpha (45 degrees in the SARE paper's comparison).

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).
    """
    return log_one_plus_sum_exp(angular_logits(y_pred, alpha_degrees))


@keras.saving.register_keras_serializable(package="sare_tf")
class NPairLoss(TupleLoss):
    """N-pair loss `log(1 + sum_i exp(f_q . f_ni - f_q . f_p))`, mean over tuples.

    Args:
        name, reduction, dtype: as in `keras.losses.Loss` (dtype float32 or float64).

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Reference:
        Sohn, NeurIPS 2016, eq. 3; Liu et al., SARE, ICCV 2019, Sec. 7.6.
    """

    def call(self, y_true, y_pred):
        return npair_loss(y_pred)


@keras.saving.register_keras_serializable(package="sare_tf")
class AngularLoss(TupleLoss):
    """Angular loss (N-pair form), mean over tuples.

    Args:
        alpha_degrees: the angle bound (45 in the SARE paper's comparison).
        name, reduction, dtype: as in `keras.losses.Loss` (dtype float32 or float64).

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Reference:
        Wang et al., ICCV 2017, eq. 8; Liu et al., SARE, ICCV 2019, Sec. 7.6.
    """

    def __init__(
        self, alpha_degrees: float = 45.0, name=None, reduction="sum_over_batch_size", dtype=None
    ):
        self.alpha_degrees = _check_alpha(alpha_degrees)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return angular_loss(y_pred, self.alpha_degrees)

    def get_config(self):
        config = super().get_config()
        config["alpha_degrees"] = self.alpha_degrees
        return config
