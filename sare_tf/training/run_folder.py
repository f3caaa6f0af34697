"""The run folder of a training run and the summary it keeps (one owner for both).

```
OUT/summary.json   config, the model trained, datasets, per-epoch metrics, timings (atomic writes)
OUT/best.keras     embedding model with the best validation Recall@5
OUT/last.keras     embedding model after the last finished epoch
OUT/initial.keras  the cluster-initialised, untrained model (`epochs=0`: the paper's baseline)
OUT/backup/        `ResumableBackup` state, present while a run is unfinished
OUT/tensorboard/   TensorBoard logs
```
On a multi-worker run, worker i (not the chief) writes the same files under `OUT/worker_i/`.
"""

from __future__ import annotations

import json
import os

from sare_tf.atomic import write_json_atomic

SUMMARY_FILE = "summary.json"
BEST_MODEL_FILE = "best.keras"
LAST_MODEL_FILE = "last.keras"
INITIAL_MODEL_FILE = "initial.keras"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
# What a resumed run carries over from the summary of the run it continues.
_CARRIED_OVER = ("epochs", "best", "resumed", "initial_validation", "mining", "collapse")


class RunFolder:
    """Where a run writes, and the summary dict it keeps current.

    Args:
        out: the run folder the user named.
        worker_id: None on the chief; a non-chief worker's task id (it writes `out/worker_<id>`).

    Attributes:
        path: this worker's folder (absolute).
        summary: the summary dict (`start_summary` makes it).
    """

    def __init__(self, out, worker_id: int | None = None):
        path = os.path.abspath(os.fspath(out))
        if worker_id is not None:
            # Other workers run the same program; their files must not collide with the chief's.
            path = os.path.join(path, f"worker_{worker_id}")
        self.path = path
        self.summary: dict = {}

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def summary_path(self) -> str:
        return self.file(SUMMARY_FILE)

    def start_summary(self, resuming: bool, **sections) -> dict:
        """A new summary with `sections`; a resumed run keeps the history of the one it continues.

        Args:
            resuming: merge the previous `summary.json` (epochs, best, mining, timings, ...).
            **sections: "config", "model", "datasets", "precision", "strategy", ...
        """
        os.makedirs(self.path, exist_ok=True)
        summary = {
            "status": "running",
            **sections,
            "epochs": [],
            "best": None,
            "mining": {"refreshes": 0, "seconds": 0.0},
            "timings": {},
            "paths": {
                "summary": SUMMARY_FILE,
                "best_model": BEST_MODEL_FILE,
                "last_model": LAST_MODEL_FILE,
                "backup": BACKUP_DIR,
            },
            "out_dir": self.path,
        }
        if resuming and os.path.exists(self.summary_path):
            with open(self.summary_path) as handle:
                previous = json.load(handle)
            for key in _CARRIED_OVER:
                if previous.get(key) is not None:
                    summary[key] = previous[key]
            summary["timings"] = dict(previous.get("timings", {}))
        self.summary = summary
        return summary

    def add_timing(self, name: str, seconds: float) -> None:
        self.summary.setdefault("timings", {})[name] = round(float(seconds), 3)

    def add_mining(self, mode: str, refreshes: list[dict]) -> None:
        """Adds this run's mining refreshes to the totals (a resumed run adds to the previous)."""
        previous = self.summary.get("mining") or {}
        self.summary["mining"] = {
            "mode": mode,
            "refreshes": int(previous.get("refreshes", 0)) + len(refreshes),
            "seconds": round(
                float(previous.get("seconds", 0.0)) + sum(r["seconds"] for r in refreshes), 3
            ),
        }

    def finish(self, status: str, **fields) -> dict:
        """Sets the final status (and e.g. "failure"), writes the summary, returns it."""
        self.summary["status"] = status
        self.summary.update(fields)
        self.write()
        return self.summary

    def write(self) -> None:
        write_json_atomic(self.summary_path, self.summary)
