"""The pure loss function of `sare_tf.losses` behind each command-line name."""

from __future__ import annotations

import functools

from loss_reference import SARE_SETTINGS

from sare_tf.losses import contrastive_loss, sare_loss, triplet_ranking_loss


def pure_loss_fn(name):
    """Returns `y_pred -> [B]` per-tuple losses for a CLI loss name (default margins)."""
    if name == "triplet":
        return triplet_ranking_loss
    if name == "contrastive":
        return contrastive_loss
    kernel, negatives = SARE_SETTINGS[name]
    return functools.partial(sare_loss, kernel=kernel, negatives=negatives)
