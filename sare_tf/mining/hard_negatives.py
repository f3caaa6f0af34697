"""Hard-negative mining as a pure function: descriptors and ground truth in, training tuples out.

numpy in, numpy out (faiss names: `xq` queries, `xb` database). The work is blocked over
queries so that 32768-d descriptors of a Pitts30k-sized split (7,416 queries x 10,000 database
images) are mined in seconds with bounded memory:

- negatives: per block of queries one random *pool* of database images is drawn, large enough
  that after removing any query's non-negatives at least `num_candidates` remain; each query
  keeps the first `num_candidates` of the pool (in the pool's random order) that are not among
  its own non-negatives. Distances to the pool are one matrix product per block
  (`[block, D] x [D, pool]`), so a block never materialises `[block, num_candidates, D]`.
- positives and the negative cache: few ids per query, scored with faiss' gathered
  distance kernels (`fvec_L2sqr_by_idx`), which read the database rows in place.

Reference:
    Arandjelovic et al., "NetVLAD", CVPR 2016, sec. 4 (weakly supervised triplets: best
    potential positive, hardest negatives among a random sample plus the previous hardest);
    Liu, Li, Dai, "SARE", ICCV 2019, sec. 5 (the same tuples, 1 positive and 10 negatives).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import faiss
import numpy as np

from sare_tf.progress import ProgressBar

NO_INDEX = -1
"""Index used for "none" in the returned arrays (a query without positive or negatives)."""


def _check_sizes(num_negatives, num_candidates, query_block_size) -> None:
    for name, value in (
        ("num_negatives", num_negatives),
        ("num_candidates", num_candidates),
        ("query_block_size", query_block_size),
    ):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if num_candidates < num_negatives:
        raise ValueError(
            "`num_candidates` must be at least `num_negatives`. Received: "
            f"num_candidates={num_candidates}, num_negatives={num_negatives}"
        )


def _check_db_usable(db_usable, num_db: int):
    """`db_usable` as a `[num_db]` bool array (None stays None), or a ValueError."""
    if db_usable is None:
        return None
    db_usable = np.asarray(db_usable)
    if db_usable.shape != (num_db,) or db_usable.dtype != bool:
        raise ValueError(
            f"`db_usable` must be a bool array of shape [{num_db}]. Received: "
            f"shape={db_usable.shape}, dtype={db_usable.dtype}"
        )
    return db_usable


def mine_tuples(
    query_desc: np.ndarray,
    db_desc: np.ndarray,
    train_positives: Sequence[np.ndarray],
    non_negatives: Sequence[np.ndarray],
    num_negatives: int = 10,
    num_candidates: int = 1000,
    negative_cache: np.ndarray | None = None,
    seed: int = 0,
    db_usable: np.ndarray | None = None,
    query_block_size: int = 512,
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Picks, for every query, its best positive and its N hardest negatives.

    Distances are squared Euclidean distances between descriptors. For query i:

    - positive: the database image of `train_positives[i]` (within 10 m) nearest to the query;
    - candidates: `num_candidates` database images drawn at random without replacement among
      those outside `non_negatives[i]` (within 25 m; all of them if fewer remain), plus the
      previous hardest negatives `negative_cache[i]` (ids in `non_negatives[i]` or repeated
      ids are dropped);
    - negatives: the `num_negatives` candidates nearest to the query, hardest first.

    Fewer than N negatives available (a tiny map where fewer than N database images lie
    outside 25 m of the query): the available ones are repeated cyclically, hardest first, to
    fill the N slots and a `UserWarning` gives the count; with none at all, the row is
    `NO_INDEX` and the query is not valid.

    Queries of one block share a random pool of database images. Each query's candidate set
    is still a uniform random sample of its own negatives; only the samples of queries in the
    same block are correlated.

    Memory: `db_desc` is used as float32 (passed as float32 and C-contiguous it is not
    copied; otherwise one float32 copy is made). `query_desc` may be float16 (it is converted
    block by block), which halves the largest input. Beyond the inputs, a block takes about
    `(query_block_size + num_candidates + max non-negatives) * D * 4` bytes (~250 MB at
    32768-d with the defaults).

    Args:
        query_desc: `[Q, D]` query descriptors (`xq`), any float dtype.
        db_desc: `[Ndb, D]` database descriptors (`xb`).
        train_positives: Q integer arrays, the database ids within 10 m of each query
            (`GeoDataset.train_positives()`).
        non_negatives: Q integer arrays, the database ids within 25 m of each query, never
            used as negatives (`GeoDataset.non_negatives()`).
        num_negatives: N, negatives per tuple.
        num_candidates: random negatives sampled per query (the paper's recipe: 1000).
        negative_cache: `[Q, M]` database ids made candidates again (typically the previous
            call's `negative_idx`); `NO_INDEX` entries are ignored. None: no cache.
        seed: seed of the random candidate pools.
        db_usable: optional `[Ndb]` bool; database images marked False (e.g. unreadable
            files) are never chosen, neither as positive nor as negative.
        query_block_size: queries per block (memory / speed trade-off).
        verbose: show a progress bar (`sare_tf.progress`).

    Returns:
        `(positive_idx [Q] int64, negative_idx [Q, N] int64, valid [Q] bool)`; `valid[i]` is
        False when query i has no training positive or no negative at all, and its missing
        entries are `NO_INDEX`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> xq, xb = rng.normal(size=(3, 8)), rng.normal(size=(20, 8))
        >>> positives = [np.array([0, 1]), np.array([2]), np.array([], dtype=int)]
        >>> non_negatives = [np.array([0, 1, 5]), np.array([2, 3]), np.array([4])]
        >>> pos, neg, valid = mine_tuples(xq, xb, positives, non_negatives, num_negatives=2,
        ...                               num_candidates=10)
        >>> neg.shape, valid.tolist()
        ((3, 2), [True, True, False])
    """
    query_desc = _check_descriptors(query_desc, "query_desc")
    db = np.ascontiguousarray(_check_descriptors(db_desc, "db_desc"), dtype=np.float32)
    num_queries, num_db = query_desc.shape[0], db.shape[0]
    if query_desc.shape[1] != db.shape[1]:
        raise ValueError(
            "`query_desc` and `db_desc` must have the same dimension. Received: "
            f"query_desc.shape={query_desc.shape}, db_desc.shape={db.shape}"
        )
    _check_sizes(num_negatives, num_candidates, query_block_size)
    positives = _IdLists(train_positives, num_queries, num_db, "train_positives")
    excluded = _IdLists(non_negatives, num_queries, num_db, "non_negatives")
    cache = _check_cache(negative_cache, num_queries, num_db)
    db_usable = _check_db_usable(db_usable, num_db)

    rng = np.random.default_rng(seed)
    db_sq_norms = _squared_norms(db)
    _check_finite(db_sq_norms, "db_desc")
    positive_idx = np.full(num_queries, NO_INDEX, dtype=np.int64)
    negative_idx = np.full((num_queries, num_negatives), NO_INDEX, dtype=np.int64)
    num_available = np.zeros(num_queries, dtype=np.int64)

    bar = ProgressBar(num_queries, "query", enabled=verbose)
    for start in range(0, num_queries, query_block_size):
        stop = min(start + query_block_size, num_queries)
        xq = np.ascontiguousarray(query_desc[start:stop], dtype=np.float32)
        _check_finite(_squared_norms(xq), "query_desc", offset=start)
        positive_table = positives.padded(start, stop)
        if db_usable is not None:
            positive_table[~db_usable[np.maximum(positive_table, 0)]] = NO_INDEX
        positive_idx[start:stop] = _nearest_positives(xq, db, positive_table)
        negative_idx[start:stop], num_available[start:stop] = _hardest_negatives(
            xq,
            db,
            db_sq_norms,
            excluded.block(start, stop),
            None if cache is None else cache[start:stop],
            db_usable,
            num_negatives,
            num_candidates,
            rng,
        )
        bar.update(stop)

    padded = (num_available > 0) & (num_available < num_negatives)
    if padded.any():
        warnings.warn(
            f"{int(padded.sum())} of {num_queries} queries have fewer than "
            f"num_negatives={num_negatives} negatives available (minimum "
            f"{int(num_available[padded].min())}); their negatives are repeated to fill the tuple.",
            stacklevel=2,
        )
    valid = (positive_idx != NO_INDEX) & (num_available > 0)
    return positive_idx, negative_idx, valid


class _IdLists:
    """Per-query id lists in CSR form (flat ids + row pointers), validated once."""

    def __init__(self, lists, num_queries: int, num_db: int, name: str):
        if len(lists) != num_queries:
            raise ValueError(
                f"`{name}` must hold one id array per query ({num_queries}). "
                f"Received: len({name})={len(lists)}"
            )
        arrays = [np.asarray(ids).reshape(-1) for ids in lists]
        counts = np.array([a.size for a in arrays], dtype=np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0)
        if flat.size and not np.issubdtype(flat.dtype, np.integer):
            raise ValueError(f"`{name}` must hold integer database ids. Received: {flat.dtype}")
        flat = flat.astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= num_db):
            raise ValueError(
                f"`{name}` holds ids outside [0, {num_db}). Received: min={flat.min()}, "
                f"max={flat.max()}"
            )
        self.flat = flat
        self.pointers = np.concatenate([[0], np.cumsum(counts)])

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """`(rows, ids)` of queries start..stop, rows relative to `start`."""
        counts = np.diff(self.pointers[start : stop + 1])
        rows = np.repeat(np.arange(stop - start), counts)
        return rows, self.flat[self.pointers[start] : self.pointers[stop]]

    def padded(self, start: int, stop: int) -> np.ndarray:
        """`[stop - start, max count]` ids padded with `NO_INDEX`."""
        rows, ids = self.block(start, stop)
        counts = np.diff(self.pointers[start : stop + 1])
        table = np.full((stop - start, max(int(counts.max(initial=0)), 1)), NO_INDEX, np.int64)
        columns = np.arange(ids.size) - (self.pointers[start:stop] - self.pointers[start])[rows]
        table[rows, columns] = ids
        return table


def _check_descriptors(desc, name: str) -> np.ndarray:
    desc = np.asarray(desc)
    if desc.ndim != 2 or not np.issubdtype(desc.dtype, np.floating):
        raise ValueError(
            f"`{name}` must be a 2-D float array. Received: shape={desc.shape}, dtype={desc.dtype}"
        )
    return desc


def _check_finite(sq_norms: np.ndarray, name: str, offset: int = 0) -> None:
    """A NaN / inf anywhere in a row makes its squared norm non-finite: one cheap test per row."""
    bad = np.flatnonzero(~np.isfinite(sq_norms))
    if bad.size:
        rows = ", ".join(str(offset + i) for i in bad[:5])
        raise ValueError(
            f"`{name}` holds NaN or infinite values (rows {rows}{', ...' if bad.size > 5 else ''}); "
            "a diverged model or a broken image gives such descriptors."
        )


def _check_cache(cache, num_queries: int, num_db: int) -> np.ndarray | None:
    if cache is None:
        return None
    cache = np.asarray(cache)
    if (
        cache.ndim != 2
        or cache.shape[0] != num_queries
        or not np.issubdtype(cache.dtype, np.integer)
    ):
        raise ValueError(
            f"`negative_cache` must be an integer array of shape [{num_queries}, M]. "
            f"Received: shape={cache.shape}, dtype={cache.dtype}"
        )
    if cache.size and (cache.min() < NO_INDEX or cache.max() >= num_db):
        raise ValueError(
            f"`negative_cache` holds ids outside [{NO_INDEX}, {num_db}). Received: "
            f"min={cache.min()}, max={cache.max()}"
        )
    return cache.astype(np.int64)


def _squared_norms(x: np.ndarray, rows_per_chunk: int = 4096) -> np.ndarray:
    return np.concatenate(
        [
            np.einsum("ij,ij->i", x[i : i + rows_per_chunk], x[i : i + rows_per_chunk])
            for i in range(0, x.shape[0], rows_per_chunk)
        ]
    )


def _gathered_sq_distances(xq: np.ndarray, xb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`d[i, j] = |xq[i] - xb[ids[i, j]]|^2`, inf where `ids[i, j] == NO_INDEX`."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    distances = np.empty(ids.shape, dtype=np.float32)
    if ids.size:
        faiss.fvec_L2sqr_by_idx(
            faiss.swig_ptr(distances),
            faiss.swig_ptr(xq),
            faiss.swig_ptr(xb),
            faiss.swig_ptr(ids),
            xq.shape[1],
            ids.shape[0],
            ids.shape[1],
        )
    # faiss reports missing ids as +inf already; set it explicitly rather than rely on it.
    distances[ids == NO_INDEX] = np.inf
    return distances


def _nearest_positives(xq: np.ndarray, xb: np.ndarray, positive_table: np.ndarray) -> np.ndarray:
    distances = _gathered_sq_distances(xq, xb, positive_table)
    best = np.argmin(distances, axis=1)
    nearest = positive_table[np.arange(len(best)), best]
    nearest[~np.isfinite(distances[np.arange(len(best)), best])] = NO_INDEX
    return nearest


def _hardest_negatives(
    xq, xb, db_sq_norms, excluded_block, cache_block, db_usable, num_negatives, num_candidates, rng
):
    """Hardest negatives of one query block; returns `(ids [B, N], number available [B])`."""
    block, num_db = xq.shape[0], xb.shape[0]
    excluded_rows, excluded_ids = excluded_block
    max_excluded = int(np.bincount(excluded_rows, minlength=block).max(initial=0))

    # Enough pool that every query keeps num_candidates after removing its own non-negatives.
    num_unusable = 0 if db_usable is None else int(np.count_nonzero(~db_usable))
    pool_size = min(num_db, num_candidates + max_excluded + num_unusable)
    pool = rng.choice(num_db, size=pool_size, replace=False)
    pool_position = np.full(num_db, NO_INDEX, dtype=np.int64)
    pool_position[pool] = np.arange(pool_size)
    allowed = np.ones((block, pool_size), dtype=bool)
    hit = pool_position[excluded_ids]
    allowed[excluded_rows[hit >= 0], hit[hit >= 0]] = False
    if db_usable is not None:
        allowed &= db_usable[pool][None, :]
    chosen = allowed & (np.cumsum(allowed, axis=1) <= num_candidates)

    pool_desc = xb[pool]
    pool_distances = (
        np.einsum("ij,ij->i", xq, xq)[:, None]
        + db_sq_norms[pool][None, :]
        - 2.0 * (xq @ pool_desc.T)
    )
    pool_distances[~chosen] = np.inf
    candidate_ids = np.broadcast_to(pool, (block, pool_size))
    candidate_distances = pool_distances

    if cache_block is not None and cache_block.shape[1]:
        cache_ids = _usable_cache(
            cache_block, excluded_rows, excluded_ids, chosen, pool_position, db_usable
        )
        cache_distances = _gathered_sq_distances(xq, xb, cache_ids)
        candidate_ids = np.concatenate([candidate_ids, cache_ids], axis=1)
        candidate_distances = np.concatenate([candidate_distances, cache_distances], axis=1)

    num_available = np.isfinite(candidate_distances).sum(axis=1)
    keep = min(num_negatives, candidate_distances.shape[1])
    nearest = np.argpartition(candidate_distances, keep - 1, axis=1)[:, :keep]
    order = np.argsort(np.take_along_axis(candidate_distances, nearest, axis=1), axis=1)
    nearest = np.take_along_axis(nearest, order, axis=1)
    # Cycle through the available negatives (hardest first) when fewer than N exist.
    slots = np.arange(num_negatives)[None, :] % np.maximum(num_available, 1)[:, None]
    negatives = np.take_along_axis(
        np.take_along_axis(candidate_ids, nearest, axis=1), np.minimum(slots, keep - 1), axis=1
    )
    negatives[num_available == 0] = NO_INDEX
    return negatives, num_available


def _usable_cache(cache_block, excluded_rows, excluded_ids, chosen, pool_position, db_usable):
    """Cache ids with non-negatives, ids already sampled and repeats replaced by `NO_INDEX`."""
    block, width = cache_block.shape
    num_db = pool_position.shape[0]
    rows = np.repeat(np.arange(block), width)
    ids = cache_block.reshape(-1).copy()
    present = ids != NO_INDEX
    if db_usable is not None:
        present &= db_usable[np.maximum(ids, 0)]
    keys = rows * num_db + ids
    present &= ~np.isin(keys, excluded_rows * num_db + excluded_ids)
    position = pool_position[np.where(present, ids, 0)]
    present &= ~((position >= 0) & chosen[rows, np.maximum(position, 0)])
    # Keep the first occurrence of an id repeated within a row.
    _, first = np.unique(np.where(present, keys, -1), return_index=True)
    unique = np.zeros_like(present)
    unique[first] = True
    present &= unique
    ids[~present] = NO_INDEX
    return ids.reshape(block, width)
