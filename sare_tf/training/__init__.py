"""The fit recipe: `TrainConfig` + `train(config) -> summary`, and its callbacks.

Importing this package does not import TensorFlow; `train` and the callbacks module do.
"""

from __future__ import annotations

import importlib

from sare_tf.training.config import STRATEGIES, TrainConfig
from sare_tf.training.run_folder import (
    BACKUP_DIR,
    BEST_MODEL_FILE,
    INITIAL_MODEL_FILE,
    LAST_MODEL_FILE,
    SUMMARY_FILE,
    RunFolder,
)
from sare_tf.training.strategy import is_chief, make_strategy

# Loaded on first use (they import TensorFlow): name -> module.
_LAZY = {
    "backup_exists": "sare_tf.training.backup",
    "TrainingDivergedError": "sare_tf.training.recipe",
    "TrainingRun": "sare_tf.training.recipe",
    "train": "sare_tf.training.recipe",
}
_CALLBACKS = (
    "BestModelCheckpoint",
    "CollapseDetector",
    "NaNGuard",
    "RunSummary",
    "TensorBoardScalars",
    "ValidationRecall",
    "halving_schedule",
)

__all__ = [
    "BACKUP_DIR",
    "BEST_MODEL_FILE",
    "INITIAL_MODEL_FILE",
    "LAST_MODEL_FILE",
    "STRATEGIES",
    "SUMMARY_FILE",
    "TrainConfig",
    "RunFolder",
    "TrainingDivergedError",
    "TrainingRun",
    "backup_exists",
    "is_chief",
    "make_strategy",
    "train",
    *_CALLBACKS,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _CALLBACKS:
        return getattr(importlib.import_module("sare_tf.training.callbacks"), name)
    raise AttributeError(f"module 'sare_tf.training' has no attribute {name!r}")
