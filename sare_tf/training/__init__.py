"""The fit recipe: `TrainConfig` + `train(config) -> summary`, and its callbacks.

Names load on first use (`sare_tf.lazy_exports`): `TrainConfig` and the run folder's names do not
import TensorFlow; `train` and the callbacks do.
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "config": ("STRATEGIES", "TrainConfig"),
        "run_folder": (
            "BACKUP_DIR",
            "BEST_MODEL_FILE",
            "INITIAL_MODEL_FILE",
            "LAST_MODEL_FILE",
            "SUMMARY_FILE",
            "RunFolder",
        ),
        "strategy": ("is_chief", "make_strategy"),
        "backup": ("backup_exists",),
        "recipe": ("TrainingDivergedError", "TrainingRun", "train"),
        "callbacks": (
            "BestModelCheckpoint",
            "CollapseDetector",
            "NaNGuard",
            "RunSummary",
            "TensorBoardScalars",
            "ValidationRecall",
            "halving_schedule",
        ),
    },
)
