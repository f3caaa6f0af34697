"""Tuple losses for place recognition: the SARE family, triplet ranking, contrastive, and the
metric-learning objectives of the SARE paper's comparison (Sec. 7.6): N-pair, angular, lifted.

Every loss takes `y_pred` of shape `[B, 2+N, D]` (query, positive, N >= 1 negatives),
ignores `y_true`, computes in float32 (float64 when asked) and averages over tuples.
`get_loss(name)` builds one from its command-line name.
"""

from __future__ import annotations

from sare_tf.losses._base import TupleLoss
from sare_tf.losses.contrastive import ContrastiveLoss, contrastive_loss
from sare_tf.losses.geo_classification import (
    GeoClassificationLoss,
    geo_classification_loss,
)
from sare_tf.losses.lifted import LiftedStructuredLoss, lifted_structured_loss
from sare_tf.losses.npair import AngularLoss, NPairLoss, angular_loss, npair_loss
from sare_tf.losses.sare import (
    NEGATIVE_MODES,
    SARE_KERNELS,
    CauchySARE,
    ExponentialSARE,
    GaussianSARE,
    SARELoss,
    combine_negatives,
    get_sare_kernel,
    register_sare_kernel,
    sare_log_ratios,
    sare_loss,
    sare_probabilities,
)
from sare_tf.losses.triplet import TripletRankingLoss, triplet_ranking_loss
from sare_tf.registry import IMAGE_LOSSES, LOSS_NAMES

# Command-line name -> (class, fixed constructor arguments).
_LOSSES = {
    "sare-joint": (GaussianSARE, {"negatives": "joint"}),
    "sare-ind": (GaussianSARE, {"negatives": "independent"}),
    "sare-joint-cauchy": (CauchySARE, {"negatives": "joint"}),
    "sare-ind-cauchy": (CauchySARE, {"negatives": "independent"}),
    "sare-joint-exp": (ExponentialSARE, {"negatives": "joint"}),
    "sare-ind-exp": (ExponentialSARE, {"negatives": "independent"}),
    "triplet": (TripletRankingLoss, {}),
    "contrastive": (ContrastiveLoss, {}),
    "npair": (NPairLoss, {}),
    "angular": (AngularLoss, {}),
    "lifted": (LiftedStructuredLoss, {}),
    "geo-classification": (GeoClassificationLoss, {}),
}
if tuple(_LOSSES) != LOSS_NAMES:
    raise ImportError(f"Loss classes {tuple(_LOSSES)} differ from the names {LOSS_NAMES}.")


def get_loss(name: str, /, **kwargs):
    """Builds a loss from its command-line name.

    Args:
        name: one of `LOSS_NAMES`: "sare-joint", "sare-ind" (Gaussian kernel),
            "sare-joint-cauchy", "sare-ind-cauchy", "sare-joint-exp", "sare-ind-exp",
            "triplet", "contrastive", "npair", "angular", "lifted", "geo-classification" (on
            single images with cell labels, `IMAGE_LOSSES`). Case and `_` for `-` do not matter.
        **kwargs: constructor arguments, e.g. `margin=0.2` for "triplet", `name=...`.

    Returns:
        The loss object.

    Example:
        >>> get_loss("sare-ind-cauchy").get_config()["negatives"]
        'independent'
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _LOSSES:
        raise ValueError(f"Unknown loss. Expected one of {LOSS_NAMES}. Received: name={name!r}")
    cls, fixed = _LOSSES[key]
    # The kernel is fixed by the class (GaussianSARE, ...), the negatives mode by the name.
    fixed_names = set(fixed) | ({"kernel"} if issubclass(cls, SARELoss) else set())
    clashes = sorted(fixed_names & set(kwargs))
    if clashes:
        raise ValueError(
            f"Loss {key!r} fixes {clashes}; use SARELoss to choose them. Received: {kwargs}"
        )
    return cls(**fixed, **kwargs)


__all__ = [
    "LOSS_NAMES",
    "AngularLoss",
    "LiftedStructuredLoss",
    "NPairLoss",
    "NEGATIVE_MODES",
    "SARE_KERNELS",
    "CauchySARE",
    "ContrastiveLoss",
    "ExponentialSARE",
    "GeoClassificationLoss",
    "IMAGE_LOSSES",
    "GaussianSARE",
    "SARELoss",
    "TripletRankingLoss",
    "TupleLoss",
    "combine_negatives",
    "contrastive_loss",
    "get_loss",
    "get_sare_kernel",
    "register_sare_kernel",
    "sare_log_ratios",
    "sare_loss",
    "sare_probabilities",
    "triplet_ranking_loss",
    "angular_loss",
    "geo_classification_loss",
    "lifted_structured_loss",
    "npair_loss",
]
