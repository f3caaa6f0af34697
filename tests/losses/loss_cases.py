"""The pure loss function of `sare_tf.losses` behind each command-line name."""

from __future__ import annotations

import functools

from loss_reference import SARE_SETTINGS

from sare_tf.losses import (
    angular_loss,
    contrastive_loss,
    lifted_structured_loss,
    npair_loss,
    sare_loss,
    triplet_ranking_loss,
)

_PAPER_LOSSES = {"npair": npair_loss, "angular": angular_loss, "lifted": lifted_structured_loss}


def pure_loss_fn(name):
    """Returns `y_pred -> [B]` per-tuple losses for a CLI loss name (default margins)."""
    if name == "triplet":
        return triplet_ranking_loss
    if name == "contrastive":
        return contrastive_loss
    if name in _PAPER_LOSSES:
        return _PAPER_LOSSES[name]
    kernel, negatives = SARE_SETTINGS[name]
    return functools.partial(sare_loss, kernel=kernel, negatives=negatives)
