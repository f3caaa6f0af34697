"""Frame-aligned traversals (Nordland-style): the same route recorded several times.

Layout (as Nordland and similar datasets are commonly distributed): one folder per traversal,
each holding one image per frame, and frame i of every traversal shows the same place:

    ROOT/summer/00001.png ...      ROOT/winter/00001.png ...

Alignment is by file name (the same name is the same place; the default) or by sorted position
(`align="index"`). One traversal is the database, another the queries (`ROOT:DB,QUERY`; with
exactly two folders, the first in sorted order is the database). There are no positions: a
query's ground truth is the database frames within +-`tolerance_frames` of its own (default 2,
inclusive; the literature uses 1 to 10 for Nordland, so the value is printed with every
result). Inside sare_tf the frame index is the position: 1 unit = 1 frame, `pos_dist_thr` =
the tolerance, training positives within `min(1, tolerance)` frame.
"""

from __future__ import annotations

import os

import numpy as np

from sare_tf.data.geo_dataset import GeoDataset
from sare_tf.data.readers import DB_FOLDER_NAMES, IMAGE_EXTENSIONS, QUERY_FOLDER_NAMES
DEFAULT_TOLERANCE_FRAMES = 2


def _images_in(folder: str) -> list[str]:
    return sorted(
        name for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    )  # fmt: skip


def traversal_folders(root) -> list[str]:
    """Subfolders of `root` that hold images directly (candidate traversals), sorted."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    return sorted(
        name for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name)) and _images_in(os.path.join(root, name))
    )  # fmt: skip


def split_traversal_suffix(path: str) -> tuple[str, tuple[str, str] | None]:
    """`"ROOT:summer,winter"` -> `("ROOT", ("summer", "winter"))`; else `(path, None)`."""
    head, separator, tail = os.fspath(path).rpartition(":")
    names = tail.split(",")
    if separator and len(names) == 2 and all(names) and "/" not in tail and os.path.isdir(head):
        return head, (names[0], names[1])
    return os.fspath(path), None


def read_traversals(
    root,
    database: str | None = None,
    queries: str | None = None,
    tolerance_frames: int = DEFAULT_TOLERANCE_FRAMES,
    align: str = "name",
    image_root=None,
) -> GeoDataset:
    """Two traversals of one route as a `GeoDataset` with frame-index ground truth.

    Args:
        root: the folder of traversal folders.
        database, queries: traversal folder names (default: the two folders, sorted).
        tolerance_frames: a retrieval is correct within +-this many frames.
        align: "name" (same file name = same place) or "index" (same sorted position).
        image_root: folder the stored paths are relative to (default `root`).

    Raises:
        ValueError: not two traversals to choose from, frames that do not align (counts and
            the first unmatched names given), a bad tolerance or alignment mode.
    """
    root = os.fspath(root)
    if align not in ("name", "index"):
        raise ValueError(f"`align` must be 'name' or 'index'. Received: {align!r}")
    if isinstance(tolerance_frames, bool) or int(tolerance_frames) != tolerance_frames or tolerance_frames < 0:
        raise ValueError(f"`tolerance_frames` must be a whole number >= 0. Received: {tolerance_frames!r}")
    found = traversal_folders(root)
    if database is None or queries is None:
        if len(found) != 2:
            raise ValueError(
                f"{root} holds {len(found)} traversal folders {found[:6]}; name the database and "
                f"the query traversal: {root}:DB,QUERY."
            )
        database, queries = found
    for name in (database, queries):
        if name not in found:
            raise ValueError(f"{root}: no traversal folder {name!r} with images (found {found}).")
    names = {name: _images_in(os.path.join(root, name)) for name in (database, queries)}
    if align == "name":
        db_only = sorted(set(names[database]) - set(names[queries]))
        q_only = sorted(set(names[queries]) - set(names[database]))
        if db_only or q_only:
            raise ValueError(
                f"{root}: the traversals do not align by file name: {len(db_only)} frames only in "
                f"{database} (first {db_only[:3]}), {len(q_only)} only in {queries} (first "
                f"{q_only[:3]}). Fix the folders or use align='index'."
            )
        frames = {name: names[name] for name in names}
    else:
        if len(names[database]) != len(names[queries]):
            raise ValueError(
                f"{root}: {database} has {len(names[database])} frames and {queries} "
                f"{len(names[queries])}; aligning by index needs the same number."
            )
        frames = names
    image_root = os.fspath(image_root) if image_root else root

    def relative(traversal, file_name):
        return os.path.relpath(os.path.join(root, traversal, file_name), image_root).replace(
            os.sep, "/"
        )

    count = len(frames[database])
    positions = np.stack([np.arange(count, dtype=np.float64), np.zeros(count)], axis=1)
    tolerance = float(tolerance_frames)
    return GeoDataset(
        db_paths=[relative(database, f) for f in frames[database]],
        db_utm=positions,
        query_paths=[relative(queries, f) for f in frames[queries]],
        query_utm=positions.copy(),
        image_root=image_root,
        pos_dist_thr=max(tolerance, 0.5),
        nontriv_pos_dist_thr=min(1.0, max(tolerance, 0.5)),
        name=f"{os.path.basename(os.path.abspath(root))}_{database}_{queries}",
        frame=f"frame indices (1 unit = 1 frame; correct within +-{tolerance_frames} frames)",
    )


def is_traversal_root(path) -> bool:
    """A folder of at least two image folders, and not a database/queries dataset folder."""
    folders = traversal_folders(path)
    return len(folders) >= 2 and not set(folders) & set(DB_FOLDER_NAMES + QUERY_FOLDER_NAMES)
