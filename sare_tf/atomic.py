"""Writing files so that a reader (or a resumed run) never sees half of one.

Everything is written to a temporary file in the destination folder and renamed into place
with `os.replace`, which is atomic on POSIX file systems: a run killed mid-write leaves the
previous version intact (plus, at worst, a stray `.tmp` file).
"""

from __future__ import annotations

import json
import math
import os
import uuid

import numpy as np


def _temporary_path(path: str, suffix: str) -> str:
    """A fresh name beside `path` (same file system, so the final rename is atomic)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    return os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{token}.tmp{suffix}")


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Writes `data` as indented JSON to `path` atomically (temp file, fsync, rename).

    NaN and infinite floats become `null` (strict JSON has no NaN).
    """
    path = os.fspath(path)
    temporary = _temporary_path(path, ".json")
    try:
        with open(temporary, "w") as out:
            json.dump(_finite(data), out, indent=2, default=_json_default, allow_nan=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """Saves a Keras model to a `.keras` file atomically (temp file, rename)."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Model files must end in '.keras'. Received: path={path!r}")
    temporary = _temporary_path(path, ".keras")
    try:
        model.save(temporary, overwrite=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _finite(value):
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)
