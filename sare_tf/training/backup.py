"""`BackupAndRestore` that can restore before `fit` and repairs a backup damaged by a kill."""

from __future__ import annotations

import json
import os
import shutil

import keras

from sare_tf.training.run_folder import BACKUP_DIR


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, plus what a mining run needs before `fit` starts.

    The tuples of the first pass are mined with the weights the run resumes from, so those
    weights must be loaded before `fit` (whose own `on_train_begin` restore then loads the same
    files again). A run killed while the backup was being written leaves one of the two files
    unreadable; `double_checkpoint=True` keeps the previous pair (`.bkp`), which is then copied
    over the damaged one, so that Keras's own restore in `fit` reads the same, intact state.

    Args:
        backup_dir: the folder (Keras's argument).
        save_freq: "epoch" or batches between backups (Keras's argument).
    """

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(os.fspath(backup_dir), save_freq=save_freq, double_checkpoint=True)

    def exists(self) -> bool:
        """True when the folder holds an unfinished run's state (current or previous pair)."""
        return any(os.path.exists(path) for path in (self._weights_path, self._prev_weights_path))

    def restore_into(self, model) -> tuple[int, int]:
        """Loads the backup weights into `model` now; returns the `(epoch, batch)` to resume at.

        Raises:
            ValueError: neither the current nor the previous backup can be read.
        """
        pairs = (
            (self._weights_path, self._training_metadata_path),
            (self._prev_weights_path, self._prev_training_metadata_path),
        )
        for weights, metadata in pairs:
            try:
                with open(metadata) as handle:
                    recorded = json.load(handle)
                position = int(recorded["epoch"]), int(recorded.get("batch") or 0)
                model.load_weights(weights)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if weights != self._weights_path:
                shutil.copyfile(weights, self._weights_path)
                shutil.copyfile(metadata, self._training_metadata_path)
            return position
        raise ValueError(
            f"The backup in {self.backup_dir} cannot be read (weights or metadata damaged). "
            "Delete the folder to start the run over."
        )


def backup_exists(out_dir) -> bool:
    """True when the run folder `out_dir` holds an unfinished run's backup."""

    return ResumableBackup(os.path.join(os.fspath(out_dir), BACKUP_DIR)).exists()
