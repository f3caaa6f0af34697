"""Writing files so that a reader (or a resumed run) never sees half of one.

Everything is written to a temporary file in the destination folder and renamed into place
with `os.replace`, which is atomic on POSIX file systems: a run killed mid-write leaves the
previous version intact (plus, at worst, a stray `.tmp` file).
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path beside `path`; when the block ends, the file written there
    replaces `path` at once (a reader sees the old file or the new one, never a part). If the
    block fails, the temporary file is removed and `path` is left as it was.

    Args:
        path: the file to write.
        suffix: the temporary name's ending, for writers that add or expect one (".npy").

    Example:
        >>> with atomic_file("table.npy", ".npy") as temporary:
        ...     np.save(temporary, table)
    """
    path = os.fspath(path)
    temporary = _temporary_path(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_bytes_atomic(path: str | os.PathLike, contents: bytes) -> None:
    """Writes `contents` to `path` atomically (temp file, fsync, rename)."""
    with atomic_file(path) as temporary, open(temporary, "wb") as out:
        out.write(contents)
        out.flush()
        os.fsync(out.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data, indent: int = 2) -> None:
    """Writes `data` as indented JSON to `path` atomically.

    NaN and infinite floats become `null` (strict JSON has no NaN).
    """
    text = json.dumps(_finite(data), indent=indent, default=_json_default, allow_nan=False)
    write_text_atomic(path, text + "\n")


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """Saves a Keras model to a `.keras` file atomically (temp file, rename)."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Model files must end in '.keras'. Received: path={path!r}")
    with atomic_file(path, ".keras") as temporary:
        model.save(temporary, overwrite=True)


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
