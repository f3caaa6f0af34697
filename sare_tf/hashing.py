"""sha256 fingerprints, written "sha256:<hex>": of arrays (model weights), files and folders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import numpy as np

_BLOCK = 1 << 20


def arrays_fingerprint(arrays: Iterable) -> str:
    """sha256 over arrays in order, each with its dtype and shape (so a reshape changes it)."""
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return f"sha256:{digest.hexdigest()}"


def file_sha256(path: str | os.PathLike) -> str:
    """The plain hex sha256 of a file's bytes, read in blocks (bounded memory)."""
    return files_sha256(path)


def files_sha256(*paths: str | os.PathLike) -> str:
    """One plain hex sha256 over the files' bytes in order (a TF checkpoint: its index, then
    its data shards)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_fingerprint(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> str:
    """sha256 over a folder's relative file names and contents, in sorted order.

    Args:
        folder: the folder.
        skip: top-level sub-folders left out (e.g. "assets.extra", which holds metadata only).
    """
    folder = os.fspath(folder)
    digest = hashlib.sha256()
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        if os.path.relpath(directory, folder).split(os.sep)[0] in skip:
            continue
        for name in sorted(names):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as handle:
                for block in iter(lambda handle=handle: handle.read(_BLOCK), b""):
                    digest.update(block)
    return f"sha256:{digest.hexdigest()}"
