"""The fit recipe: `TrainConfig` + `train(config) -> summary`, and its callbacks.

Importing this package does not import TensorFlow; `train` and the callbacks module do.
"""

from __future__ import annotations

import importlib

from sare_tf.training.config import STRATEGIES, TrainConfig
from sare_tf.training.recipe import (
    BACKUP_DIR,
    BEST_MODEL_FILE,
    LAST_MODEL_FILE,
    SUMMARY_FILE,
    TrainingDivergedError,
    backup_exists,
    is_chief,
    make_strategy,
    train,
)

_CALLBACKS = (
    "BestModelCheckpoint",
    "NaNGuard",
    "RunSummary",
    "TensorBoardScalars",
    "ValidationRecall",
    "halving_schedule",
)

__all__ = [
    "BACKUP_DIR",
    "BEST_MODEL_FILE",
    "LAST_MODEL_FILE",
    "STRATEGIES",
    "SUMMARY_FILE",
    "TrainConfig",
    "TrainingDivergedError",
    "backup_exists",
    "is_chief",
    "make_strategy",
    "train",
    *_CALLBACKS,
]


def __getattr__(name: str):
    if name in _CALLBACKS:
        return getattr(importlib.import_module("sare_tf.training.callbacks"), name)
    raise AttributeError(f"module 'sare_tf.training' has no attribute {name!r}")
