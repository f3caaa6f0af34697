"""Dataset-specific post-processing of rankings before Recall@N is counted.

- Tokyo 24/7 (Torii et al., CVPR 2015; NetVLAD's test protocol): each database panorama is cut
  into 12 perspective images; a ranking keeps only the best-ranked cutout of each panorama
  (a simple non-maximum suppression), so Recall@N counts N distinct panoramas. Panoramas are
  identified from the file names: Tokyo 24/7 names its cutouts `<panorama>_<pitch>_<yaw>.<ext>`
  (e.g. `..._012_030.png`); the default pattern strips one or two trailing `_<digits>` groups.
- TokyoTM (Tokyo Time Machine, NetVLAD's training city): queries are drawn from the same
  collection as the database, so a database image taken at the same time as the query (the same
  panorama) is not a valid answer: positives must differ in time. Rankings drop database images
  whose time stamp equals the query's.

Filtering can leave fewer than N results; `ranked_search` then searches deeper (doubling) until
N results survive or the whole database has been ranked, so the filtered ranking is exact.
"""

from __future__ import annotations

import re

import numpy as np

from sare_tf.index.faiss_search import search_index
from sare_tf.registry import RANKING_PROTOCOLS

PROTOCOLS = RANKING_PROTOCOLS
PANORAMA_PATTERN = r"^(?P<panorama>.+?)(?:_\d+){1,2}\.[A-Za-z0-9]+$"


class RankingProtocol:
    """The standard protocol: rankings are used as searched. Subclasses filter them.

    Subclasses override `keep(query_ids, retrieved)` (which results survive) and may override
    `initial_depth(k)` (how deep to search first).
    """

    name = "standard"

    def initial_depth(self, k: int) -> int:
        return k

    def keep(self, query_ids: np.ndarray, retrieved: np.ndarray) -> np.ndarray:
        """`[B, depth]` bool: which of the retrieved database ids (-1: empty) survive."""
        return retrieved >= 0


class PanoramaSuppression(RankingProtocol):
    """Keeps the best-ranked cutout of each database panorama (Tokyo 24/7 protocol).

    Args:
        db_panorama_ids: `[Ndb]` int, the panorama of each database image.
        cutouts_per_panorama: cutouts per panorama (12 on Tokyo 24/7); the first search goes
            `k * cutouts_per_panorama` deep, which always holds k distinct panoramas.
    """

    name = "tokyo247"

    def __init__(self, db_panorama_ids, cutouts_per_panorama: int = 12):
        self.db_panorama_ids = np.asarray(db_panorama_ids, dtype=np.int64)
        self.cutouts_per_panorama = int(cutouts_per_panorama)

    @classmethod
    def from_file_names(
        cls, db_paths, cutouts_per_panorama: int = 12, pattern: str = PANORAMA_PATTERN
    ) -> PanoramaSuppression:
        """Builds the suppression from database file names (see `panorama_ids_from_file_names`)."""
        ids = panorama_ids_from_file_names(db_paths, cutouts_per_panorama, pattern)
        return cls(ids, cutouts_per_panorama)

    def initial_depth(self, k: int) -> int:
        return k * self.cutouts_per_panorama

    def keep(self, query_ids, retrieved):
        valid = retrieved >= 0
        panoramas = np.where(valid, self.db_panorama_ids[np.where(valid, retrieved, 0)], -1)
        # Stable sort by panorama per row: the first of each run is its best-ranked cutout.
        order = np.argsort(panoramas, axis=1, kind="stable")
        grouped = np.take_along_axis(panoramas, order, axis=1)
        first = np.ones_like(grouped, dtype=bool)
        first[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
        keep = np.zeros_like(first)
        np.put_along_axis(keep, order, first, axis=1)
        return keep & valid


class DifferentTimeFilter(RankingProtocol):
    """Drops database images taken at the query's time (TokyoTM protocol).

    Args:
        query_time_stamps: `[Q]` capture times of the queries.
        db_time_stamps: `[Ndb]` capture times of the database images.
    """

    name = "tokyotm"

    def __init__(self, query_time_stamps, db_time_stamps):
        self.query_time_stamps = np.asarray(query_time_stamps).reshape(-1)
        self.db_time_stamps = np.asarray(db_time_stamps).reshape(-1)

    def initial_depth(self, k: int) -> int:
        # A handful of captures per place; deeper searches follow when this is not enough.
        return k * 10

    def keep(self, query_ids, retrieved):
        valid = retrieved >= 0
        db_times = self.db_time_stamps[np.where(valid, retrieved, 0)]
        return valid & (db_times != self.query_time_stamps[query_ids][:, None])


def panorama_ids_from_file_names(
    db_paths, cutouts_per_panorama: int | None = 12, pattern: str = PANORAMA_PATTERN
) -> np.ndarray:
    """Numbers the panoramas that database cutouts come from, using their file names.

    Args:
        db_paths: database image paths; the folder is part of the panorama's identity.
        cutouts_per_panorama: the most cutouts one panorama may have (None: no check).
        pattern: a regular expression with a named group `panorama`, matched against each
            path's file name (the default strips one or two trailing `_<digits>` groups and the
            extension: `abc_012_030.png` -> `abc`).

    Returns:
        `[Ndb]` int64 panorama ids (0, 1, ... in order of first appearance).

    Raises:
        ValueError: a name does not match, a panorama has too many cutouts, or no two images
            share a panorama (the names do not identify panoramas).
    """
    regex = re.compile(pattern)
    if "panorama" not in regex.groupindex:
        raise ValueError(f"`pattern` needs a named group 'panorama'. Received: pattern={pattern!r}")
    keys = []
    for path in db_paths:
        unified = str(path).replace("\\", "/")
        folder, _, name = unified.rpartition("/")
        match = regex.match(name)
        if match is None:
            raise ValueError(
                f"Database file name {unified!r} does not match the panorama pattern {pattern!r}."
            )
        keys.append((folder, match.group("panorama")))
    numbering: dict = {}
    ids = np.array([numbering.setdefault(key, len(numbering)) for key in keys], dtype=np.int64)
    counts = np.bincount(ids) if len(ids) else np.zeros(0, dtype=np.int64)
    if cutouts_per_panorama is not None and len(counts) and counts.max() > cutouts_per_panorama:
        worst = int(np.argmax(counts))
        raise ValueError(
            f"Panorama {keys[int(np.flatnonzero(ids == worst)[0])]} has {counts[worst]} cutouts, "
            f"more than cutouts_per_panorama={cutouts_per_panorama}: the pattern does not "
            f"separate panoramas. Received: pattern={pattern!r}"
        )
    if len(ids) > 1 and len(counts) == len(ids):
        raise ValueError(
            f"No two database images share a panorama under the pattern {pattern!r} (e.g. "
            f"{keys[0]}): file names do not identify panoramas."
        )
    return ids


def _compact(retrieved: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Moves kept ids to the front of each row (order preserved), -1 elsewhere, first k columns."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(retrieved, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
    out = np.where(kept, ids, -1)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def _to_db_ids(index_ids: np.ndarray, db_ids: np.ndarray | None) -> np.ndarray:
    if db_ids is None:
        return index_ids
    valid = index_ids >= 0
    return np.where(valid, db_ids[np.where(valid, index_ids, 0)], -1)


def ranked_search(
    faiss_index,
    xq,
    k: int,
    protocol: RankingProtocol | None = None,
    db_ids=None,
    block_size: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """Top-k database ids per query after a protocol's filtering, searching deeper as needed.

    Args:
        faiss_index: an index from `sare_tf.index.faiss_search.build_index`.
        xq: `[Q, D]` query descriptors.
        k: results per query.
        protocol: a `RankingProtocol`, or None for the plain ranking.
        db_ids: `[ntotal]` database id of each index row (when the index holds a subset).
        block_size: queries per faiss call.
        progress: show a progress bar for the first pass.

    Returns:
        `[Q, k]` int64 database ids, best first, -1 where fewer than k survive.
    """

    protocol = protocol or RankingProtocol()
    num_index = faiss_index.ntotal
    if db_ids is not None:
        db_ids = np.asarray(db_ids, dtype=np.int64)
    output = np.full((len(xq), k), -1, dtype=np.int64)
    pending = np.arange(len(xq))
    depth = min(max(protocol.initial_depth(k), k), num_index)
    while pending.size:
        _, index_ids = search_index(
            faiss_index, xq[pending], depth, block_size=block_size, progress=progress
        )
        retrieved = _to_db_ids(index_ids, db_ids)
        keep = protocol.keep(pending, retrieved)
        output[pending] = _compact(retrieved, keep, k)
        finished = (keep.sum(axis=1) >= k) | (depth >= num_index)
        pending = pending[~finished]
        depth = min(2 * depth, num_index)
        progress = False
    return output


def protocol_for_dataset(
    dataset,
    protocol: str = "auto",
    cutouts_per_panorama: int = 12,
    panorama_pattern: str = PANORAMA_PATTERN,
) -> RankingProtocol | None:
    """Picks the ranking protocol of a `GeoDataset`.

    Args:
        dataset: a `sare_tf.data.GeoDataset`.
        protocol: "standard", "tokyo247", "tokyotm" or "auto" (Tokyo 24/7 when the dataset's
            name contains "tokyo247"/"tokyo_247"; TokyoTM when it carries database and query time
            stamps; standard otherwise).
        cutouts_per_panorama: for Tokyo 24/7.
        panorama_pattern: for Tokyo 24/7 (see `panorama_ids_from_file_names`).

    Returns:
        A `RankingProtocol`, or None for the standard protocol.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol. Expected one of {PROTOCOLS}. Received: {protocol!r}")
    db_times = getattr(dataset, "db_time_stamps", None)
    query_times = getattr(dataset, "query_time_stamps", None)
    if protocol == "auto":
        name = str(getattr(dataset, "name", "")).lower().replace("-", "").replace("_", "")
        if "tokyo247" in name:
            protocol = "tokyo247"
        elif db_times is not None and query_times is not None:
            protocol = "tokyotm"
        else:
            protocol = "standard"
    if protocol == "standard":
        return None
    if protocol == "tokyo247":
        return PanoramaSuppression.from_file_names(
            dataset.db_paths, cutouts_per_panorama, panorama_pattern
        )
    if db_times is None or query_times is None:
        raise ValueError(
            f"The TokyoTM protocol needs database and query time stamps (dbTimeStamp, qTimeStamp); "
            f"dataset {getattr(dataset, 'name', '?')!r} has none."
        )
    return DifferentTimeFilter(query_times, db_times)
