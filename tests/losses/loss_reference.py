"""Plain numpy float64 loop references for the tuple losses and their gradients.

Written straight from the formulas of DESIGN.md and the SARE paper's appendix, one tuple
and one negative at a time, with no code shared with `sare_tf.losses`.
"""

from __future__ import annotations

import math

import numpy as np

SARE_NAMES = (
    "sare-joint",
    "sare-ind",
    "sare-joint-cauchy",
    "sare-ind-cauchy",
    "sare-joint-exp",
    "sare-ind-exp",
)
METRIC_LEARNING_NAMES = ("npair", "angular", "lifted")  # the SARE paper's Sec. 7.6 comparison
ALL_NAMES = (*SARE_NAMES, "triplet", "contrastive", *METRIC_LEARNING_NAMES)

# CLI name -> (kernel, negatives)
SARE_SETTINGS = {
    "sare-joint": ("gaussian", "joint"),
    "sare-ind": ("gaussian", "independent"),
    "sare-joint-cauchy": ("cauchy", "joint"),
    "sare-ind-cauchy": ("cauchy", "independent"),
    "sare-joint-exp": ("exponential", "joint"),
    "sare-ind-exp": ("exponential", "independent"),
}


def random_unit_tuples(rng, batch, num_negatives, dim):
    """`[batch, 2 + num_negatives, dim]` float64 unit-norm embeddings."""
    x = rng.normal(size=(batch, 2 + num_negatives, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _squared(a, b):
    total = 0.0
    for a_k, b_k in zip(a, b, strict=True):
        total += (float(a_k) - float(b_k)) ** 2
    return total


def _dot(a, b):
    return sum(float(a_k) * float(b_k) for a_k, b_k in zip(a, b, strict=True))


def tuple_loss(one_tuple, name, margin=None):
    """The DESIGN.md / cited papers' formula for one tuple `[2+N, D]`."""
    query, positive, negatives = one_tuple[0], one_tuple[1], one_tuple[2:]
    if name == "npair":  # Sohn 2016, eq. 3
        qp = _dot(query, positive)
        return math.log(1.0 + sum(math.exp(_dot(query, n) - qp) for n in negatives))
    if name == "angular":  # Wang et al. 2017, eq. 8, alpha = 45 degrees
        t2 = math.tan(math.radians(45.0)) ** 2
        qp = _dot(query, positive)
        return math.log(
            1.0
            + sum(
                math.exp(4 * t2 * (_dot(query, n) + _dot(positive, n)) - 2 * (1 + t2) * qp)
                for n in negatives
            )
        )
    if name == "lifted":  # Oh Song et al. 2016, eq. 4, alpha = 1
        m = 1.0 if margin is None else margin
        d_qp = math.sqrt(_squared(query, positive))
        terms = [math.exp(m - math.sqrt(_squared(query, n))) for n in negatives]
        terms += [math.exp(m - math.sqrt(_squared(positive, n))) for n in negatives]
        return 0.5 * max(0.0, math.log(sum(terms)) + d_qp) ** 2
    dp = _squared(query, positive)
    dns = [_squared(query, negative) for negative in negatives]
    sp = math.sqrt(dp)
    sns = [math.sqrt(dn) for dn in dns]
    n = len(dns)
    if name == "triplet":
        m = 0.1 if margin is None else margin
        return sum(max(0.0, m + dp - dn) for dn in dns) / n
    if name == "contrastive":
        m = 0.7 if margin is None else margin
        return 0.5 * dp + sum(0.5 * max(0.0, m - sn) ** 2 for sn in sns) / n
    kernel, negatives_mode = SARE_SETTINGS[name]
    if kernel == "gaussian":
        ratios = [math.exp(dp - dn) for dn in dns]
    elif kernel == "cauchy":
        ratios = [(1.0 + dp) / (1.0 + dn) for dn in dns]
    else:
        ratios = [math.exp(sp - sn) for sn in sns]
    if negatives_mode == "joint":
        return math.log(1.0 + sum(ratios))
    return sum(math.log(1.0 + ratio) for ratio in ratios) / n


def batch_loss(y_pred, name, margin=None):
    """Mean over the batch of `tuple_loss`."""
    losses = [tuple_loss(one_tuple, name, margin) for one_tuple in np.asarray(y_pred, "float64")]
    return sum(losses) / len(losses)


def kernel_value(query, other, kernel):
    d2 = _squared(query, other)
    if kernel == "gaussian":
        return math.exp(-d2)
    if kernel == "cauchy":
        return 1.0 / (1.0 + d2)
    return math.exp(-math.sqrt(d2))


def joint_sare_gradient(one_tuple, kernel):
    """Appendix closed forms of dL/d(q, p, n_i) for the joint SARE loss of one tuple.

    Gaussian (10)-(12), Cauchy (14)-(16), exponential (18)-(20), with
    c_x = k(q, x) / (k(q, p) + sum_j k(q, n_j)).
    """
    one_tuple = np.asarray(one_tuple, "float64")
    query, others = one_tuple[0], one_tuple[1:]
    kernels = [kernel_value(query, other, kernel) for other in others]
    total = sum(kernels)
    gradient = np.zeros_like(one_tuple)
    for index, other in enumerate(others):
        c = kernels[index] / total
        weight = (1.0 - c) if index == 0 else -c  # attraction for p, repulsion for n_i
        difference = other - query
        d2 = _squared(other, query)
        if kernel == "gaussian":
            grad = 2.0 * weight * difference
        elif kernel == "cauchy":
            grad = 2.0 * weight * difference / (1.0 + d2)
        else:
            grad = weight * difference / math.sqrt(d2)
        gradient[1 + index] = grad
        gradient[0] -= grad
    return gradient


def finite_difference_gradient(y_pred, name, step=1e-6):
    """Central differences of `batch(sum)` of the reference loss, coordinate by coordinate."""
    y_pred = np.asarray(y_pred, "float64")
    gradient = np.zeros_like(y_pred)
    for index in np.ndindex(*y_pred.shape):
        plus = y_pred.copy()
        minus = y_pred.copy()
        plus[index] += step
        minus[index] -= step
        b = index[0]
        gradient[index] = (tuple_loss(plus[b], name) - tuple_loss(minus[b], name)) / (2 * step)
    return gradient
