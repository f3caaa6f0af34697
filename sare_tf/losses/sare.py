"""Stochastic Attraction-Repulsion Embedding (SARE) losses (Liu, Li and Dai, ICCV 2019).

SARE turns the distances of a query q to its positive p and N negatives n_i into a
probability of matching with a kernel k (paper sec. 3, eqs. 3-9):

    c_p|q = k(q, p) / (k(q, p) + sum_j k(q, n_j)),   c_ni|q = k(q, n_i) / (same sum)

and minimises the KL divergence to the ground-truth distribution (all mass on the positive),
which reduces to `L = -log c_p|q`. Writing `r_i = log k(q, n_i) - log k(q, p)`:

    joint:        L = log(1 + sum_i exp(r_i)) = softplus(logsumexp_i r_i)
    independent:  L = mean_i log(1 + exp(r_i)) = mean_i softplus(r_i)

"independent" treats each (q, p, n_i) as its own single-negative SARE problem (one
softmax per negative); "joint" puts all negatives in one softmax. With squared distances
dp = |q-p|^2, dn_i = |q-n_i|^2 and plain distances sp, sn_i, the kernels give:

    Gaussian     k = exp(-d^2)       r_i = dp - dn_i
    Cauchy       k = 1 / (1 + d^2)   r_i = log(1 + dp) - log(1 + dn_i)
    Exponential  k = exp(-d)         r_i = sp - sn_i

All losses share one pipeline (split the tuple, distances, kernel log-ratios, combine the
negatives); a kernel only supplies `log k` as a function of the squared distance, looked up by
name in `SARE_KERNELS`. Gradients (appendix, joint negatives; c = c_.|q):

    Gaussian     dL/dp = 2 (1 - c_p) (p - q)           dL/dn_i = -2 c_ni (n_i - q)          (10)-(12)
    Cauchy       dL/dp = 2 (1 - c_p) (p - q) / (1+dp)  dL/dn_i = -2 c_ni (n_i - q) / (1+dn_i) (14)-(16)
    Exponential  dL/dp = (1 - c_p) (p - q) / sp        dL/dn_i = -c_ni (n_i - q) / sn_i      (18)-(20)

and dL/dq = -(dL/dp + sum_i dL/dn_i). Unlike triplet and contrastive losses, a negative's
gradient decays with its distance but never becomes exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from sare_tf.losses._base import TupleLoss
from sare_tf.losses._distances import safe_norm, to_compute_dtype, tuple_squared_distances

NEGATIVE_MODES = ("joint", "independent")


def gaussian_log_kernel(squared_distance):
    """`log k` of the Gaussian kernel `k = exp(-|q - x|^2)` (paper sec. 3)."""
    return -squared_distance


def cauchy_log_kernel(squared_distance):
    """`log k` of the Cauchy kernel `k = 1 / (1 + |q - x|^2)` (heavy-tailed, paper sec. 3)."""
    return -ops.log1p(squared_distance)


def exponential_log_kernel(squared_distance):
    """`log k` of the exponential kernel `k = exp(-|q - x|)` (paper sec. 3).

    Uses `safe_norm` so that identical embeddings give a zero, not NaN, gradient.
    """
    return -safe_norm(squared_distance)


# Kernel name -> log k as a function of the squared distance. Add kernels with
# `register_sare_kernel`; a loss stores only the name, so its config stays a plain string.
SARE_KERNELS: dict[str, Callable] = {
    "gaussian": gaussian_log_kernel,
    "cauchy": cauchy_log_kernel,
    "exponential": exponential_log_kernel,
}


def register_sare_kernel(name: str, log_kernel: Callable) -> None:
    """Adds a kernel to `SARE_KERNELS` under `name`.

    Args:
        name: the name `SARELoss(kernel=name)` and saved configs refer to.
        log_kernel: maps squared distances (a tensor of any shape) to `log k`, elementwise,
            with finite values and gradients at 0.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A kernel name must be a non-empty string. Received: name={name!r}")
    if not callable(log_kernel):
        raise ValueError(f"`log_kernel` must be callable. Received: log_kernel={log_kernel!r}")
    SARE_KERNELS[name] = log_kernel


def get_sare_kernel(kernel: str) -> Callable:
    """Returns the log-kernel function registered as `kernel`."""
    if kernel not in SARE_KERNELS:
        raise ValueError(
            f"Unknown SARE kernel. Expected one of {sorted(SARE_KERNELS)}. Received: kernel={kernel!r}"
        )
    return SARE_KERNELS[kernel]


def _check_negatives(negatives: str) -> str:
    if negatives not in NEGATIVE_MODES:
        raise ValueError(
            f"`negatives` must be one of {NEGATIVE_MODES}. Received: negatives={negatives!r}"
        )
    return negatives


def sare_log_kernels(y_pred, kernel: str = "gaussian"):
    """`log k(q, p)` `[B]` and `log k(q, n_i)` `[B, N]` for `[B, 2+N, D]` tuples.

    Computed in float32 (float64 inputs stay float64).
    """
    log_kernel = get_sare_kernel(kernel)
    positive_sq, negatives_sq = tuple_squared_distances(to_compute_dtype(y_pred))
    return log_kernel(positive_sq), log_kernel(negatives_sq)


def sare_log_ratios(y_pred, kernel: str = "gaussian"):
    """`r_i = log k(q, n_i) - log k(q, p)` `[B, N]`: how much each negative outscores the positive."""
    log_k_positive, log_k_negatives = sare_log_kernels(y_pred, kernel)
    return log_k_negatives - log_k_positive[:, None]


def sare_probabilities(y_pred, kernel: str = "gaussian"):
    """The matching probabilities `[c_p|q, c_n1|q, ..., c_nN|q]` `[B, 1+N]` (paper sec. 3).

    A softmax over the log kernels, so the joint SARE loss is `-log` of column 0.
    """
    log_k_positive, log_k_negatives = sare_log_kernels(y_pred, kernel)
    logits = ops.concatenate([log_k_positive[:, None], log_k_negatives], axis=1)
    return ops.softmax(logits, axis=1)


def combine_negatives(log_ratios, negatives: str = "joint"):
    """Per-tuple loss `[B]` from the log-ratios `[B, N]`.

    joint: `softplus(logsumexp_i r_i) = log(1 + sum_i exp(r_i))`; independent:
    `mean_i softplus(r_i)`. Both are overflow-free for any finite `r`.
    """
    if _check_negatives(negatives) == "joint":
        return ops.softplus(ops.logsumexp(log_ratios, axis=-1))
    return ops.mean(ops.softplus(log_ratios), axis=-1)


def sare_loss(y_pred, kernel: str = "gaussian", negatives: str = "joint"):
    """SARE loss per tuple, `-log c_p|q` (paper eqs. 3-9; see the module docstring).

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, N >= 1 negatives), any float dtype.
        kernel: a name in `SARE_KERNELS`: "gaussian", "cauchy" or "exponential".
        negatives: "joint" (one softmax over all negatives) or "independent" (mean of N
            single-negative losses).

    Returns:
        `[B]` losses, float32 (float64 for float64 inputs).

    Example:
        >>> y_pred = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # dp = 2, dn = 4
        >>> float(sare_loss(y_pred)[0])  # log(1 + exp(2 - 4))
        0.1269...
    """
    _check_negatives(negatives)
    return combine_negatives(sare_log_ratios(y_pred, kernel), negatives)


@keras.saving.register_keras_serializable(package="sare_tf")
class SARELoss(TupleLoss):
    """SARE loss `-log c_p|q` over `[B, 2+N, D]` tuples, averaged over the batch.

    See the module docstring for the formulas: per tuple, with `r_i = log k(q, n_i) -
    log k(q, p)`, joint `log(1 + sum_i exp(r_i))` and independent
    `mean_i log(1 + exp(r_i))`.

    Args:
        kernel: "gaussian" (`exp(-d^2)`, the paper's default), "cauchy" (`1/(1+d^2)`),
            "exponential" (`exp(-d)`), or a name added with `register_sare_kernel`.
        negatives: "joint" or "independent".
        name: loss name.
        reduction: Keras reduction; default mean over tuples.
        dtype: "float32" (default; half precision is upcast) or "float64".

    Call arguments:
        y_true: ignored (may be `None`).
        y_pred: `[B, 2+N, D]` embeddings, order query, positive, negatives.

    Example:
        >>> model.compile(optimizer="adam", loss=SARELoss(kernel="cauchy", negatives="joint"))

    Reference:
        Liu, Li and Dai, "Stochastic Attraction-Repulsion Embedding for Large Scale Image
        Localization", ICCV 2019, sec. 3 (eqs. 3-9) and appendix (eqs. 10-20).
    """

    def __init__(
        self,
        kernel: str = "gaussian",
        negatives: str = "joint",
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype=None,
    ):
        get_sare_kernel(kernel)
        _check_negatives(negatives)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.kernel = kernel
        self.negatives = negatives

    def call(self, y_true, y_pred):
        return sare_loss(y_pred, kernel=self.kernel, negatives=self.negatives)

    def get_config(self):
        config = super().get_config()
        config.update({"kernel": self.kernel, "negatives": self.negatives})
        return config


class _FixedKernelSARE(SARELoss):
    """A `SARELoss` whose kernel is fixed by the subclass (`KERNEL`)."""

    KERNEL = ""

    def __init__(
        self,
        negatives: str = "joint",
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(
            kernel=self.KERNEL, negatives=negatives, name=name, reduction=reduction, dtype=dtype
        )

    def get_config(self):
        config = super().get_config()
        del config["kernel"]
        return config


@keras.saving.register_keras_serializable(package="sare_tf")
class GaussianSARE(_FixedKernelSARE):
    """SARE with the Gaussian kernel `k = exp(-|q - x|^2)` (the paper's main loss, sec. 3).

    Per tuple: joint `log(1 + sum_i exp(dp - dn_i))`, independent
    `mean_i log(1 + exp(dp - dn_i))`. Gradients: appendix eqs. (10)-(12).

    Args:
        negatives: "joint" (CLI "sare-joint") or "independent" (CLI "sare-ind").
        name, reduction, dtype: as in `SARELoss`.
    """

    KERNEL = "gaussian"


@keras.saving.register_keras_serializable(package="sare_tf")
class CauchySARE(_FixedKernelSARE):
    """SARE with the Cauchy kernel `k = 1 / (1 + |q - x|^2)` (paper sec. 3).

    Per tuple: joint `log(1 + sum_i (1 + dp) / (1 + dn_i))`, independent
    `mean_i log(1 + (1 + dp) / (1 + dn_i))`. Gradients: appendix eqs. (14)-(16).

    Args:
        negatives: "joint" (CLI "sare-joint-cauchy") or "independent" ("sare-ind-cauchy").
        name, reduction, dtype: as in `SARELoss`.
    """

    KERNEL = "cauchy"


@keras.saving.register_keras_serializable(package="sare_tf")
class ExponentialSARE(_FixedKernelSARE):
    """SARE with the exponential kernel `k = exp(-|q - x|)` (paper sec. 3).

    Per tuple: joint `log(1 + sum_i exp(sp - sn_i))`, independent
    `mean_i log(1 + exp(sp - sn_i))` on plain distances. Gradients: appendix eqs. (18)-(20);
    at zero distance the gradient is taken as 0 (see `safe_norm`).

    Args:
        negatives: "joint" (CLI "sare-joint-exp") or "independent" ("sare-ind-exp").
        name, reduction, dtype: as in `SARELoss`.
    """

    KERNEL = "exponential"
