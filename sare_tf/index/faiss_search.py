"""Nearest-neighbour search of database descriptors with faiss (numpy in, numpy out).

Descriptors are L2-normalised, so ranking by inner product is ranking by Euclidean distance
(|q - x|^2 = 2 - 2 q.x). Three indexes, chosen by name:

- ``"flat"`` (default): exact search, `faiss.IndexFlatIP`. Ties (equal similarity) are ordered
  by ascending database index, including at the cut-off k (faiss itself does not order ties for
  inner products; rows with a tie across the cut-off are re-ranked exactly with numpy).
- ``"ivfpq"``: inverted file + product quantization (`faiss.IndexIVFPQ`, L2 on unit vectors),
  for maps of hundreds of thousands to millions of images. Parameters: ``nlist`` coarse cells
  (default ~4 sqrt(N), a power of two, at most N / 39), ``m`` sub-quantizers (bytes per vector at
  ``nbits=8``; default D / 8 capped at 64, must divide D), ``nbits`` bits per sub-quantizer code
  (8), ``nprobe`` cells visited per query (default 32), ``refine_factor`` (0: off; R > 0
  re-ranks the k * R best codes with the exact vectors, `faiss.IndexRefineFlat`, which keeps the
  raw vectors in memory but recovers exact ordering), ``opq`` (False; True learns an OPQ
  rotation, `faiss.OPQMatrix`, on the training sample and applies it before the coarse
  quantizer and PQ through `faiss.IndexPreTransform`, to spread the variance evenly over the
  ``m`` sub-vectors. Same code size and query speed; one D x D matrix more; training 6-9x
  slower. On 100k x 256-d synthetic descriptors (`sare-tf bench retrieval`) it gained ~1.2
  points of Recall@1 with m=32, and with m=64 only when coordinate variances are unequal, as
  after PCA without whitening). `inner_ivfpq` reaches the `faiss.IndexIVFPQ` inside any of
  these (e.g. to change ``nprobe`` after building).
- ``"hnsw"``: graph search over the raw vectors (`faiss.IndexHNSWFlat`, L2): ``hnsw_m``
  neighbours per node (32), ``ef_construction`` (80), ``ef_search`` (128). No compression but
  fast queries; memory ~ N * (4 D + 8 hnsw_m) bytes.

Whatever the index, `search` returns similarities ``D`` (inner products; for the L2 indexes
converted as q.x = 1 - |q - x|^2 / 2, exact for unit vectors) sorted in decreasing order and
database ids ``I``; slots past the database size are ``I = -1``, ``D = -inf``.
"""

# ruff: noqa: E741  (faiss naming: D, I = index.search(xq, k))
from __future__ import annotations

import faiss
import numpy as np

from sare_tf.index.config import IndexConfig, as_index_config, default_nlist, default_pq_m
from sare_tf.progress import ProgressBar


def as_float32_matrix(x, name: str) -> np.ndarray:
    """C-contiguous float32 `[N, D]` copy-if-needed of `x`, with a clear error otherwise."""
    array = np.ascontiguousarray(x, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D [N, D] array. Received: {name}.shape={array.shape}"
        )
    if array.size and not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"`{name}` has non-finite values (first at row {row}).")
    return array


def build_index(xb, index: str | IndexConfig = "flat", **params):
    """Builds and fills a faiss index with database descriptors.

    Args:
        xb: `[Ndb, D]` database descriptors (L2-normalised).
        index: "flat", "ivfpq", "hnsw" or an `IndexConfig`.
        **params: `IndexConfig` fields (nlist, m, nbits, nprobe, refine_factor, opq, ...).

    Returns:
        A trained faiss index holding `xb` (ids = row numbers). Its `metric_type` says whether it
        returns inner products or squared L2 distances; `search_index` converts. For "ivfpq":
        `faiss.IndexIVFPQ`, wrapped in `faiss.IndexPreTransform` with `opq=True`, then in
        `faiss.IndexRefineFlat` with `refine_factor > 0`.
    """
    config = as_index_config(index, **params)
    xb = as_float32_matrix(xb, "xb")
    faiss_index = trained_index(xb, len(xb), config)
    faiss_index.add(xb)
    return faiss_index


def training_sample(num_db: int, config: IndexConfig) -> np.ndarray | None:
    """Row ids of the seeded training sample `trained_index` uses (None: every row)."""
    if config.kind != "ivfpq" or num_db <= config.max_train_points:
        return None
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(num_db, config.max_train_points, replace=False))


def trained_index(xb, num_db: int, index: str | IndexConfig = "flat", **params):
    """An empty faiss index, trained where it needs training, for `num_db` descriptors.

    Built with `faiss.index_factory` from `IndexConfig.factory_string`, its search-time knobs
    set with `faiss.ParameterSpace`. Filling it is the caller's (`index.add(block)`, block by
    block for a database that does not fit in memory): `build_index` is `trained_index` + `add`.

    Args:
        xb: `[Ndb, D]` database descriptors, or any array-like with rows (e.g. a `np.memmap`);
            only the `training_sample` rows are read (IVF-PQ), or none.
        num_db: how many descriptors the index will hold (sizes IVF-PQ's defaults).
        index: "flat", "ivfpq", "hnsw" or an `IndexConfig`.
        **params: `IndexConfig` fields.
    """
    config = as_index_config(index, **params)
    dim = int(xb.shape[1])
    if config.kind == "ivfpq":
        _check_ivfpq_training(config, dim, num_db)
    metric = faiss.METRIC_INNER_PRODUCT if config.kind == "flat" else faiss.METRIC_L2
    faiss_index = faiss.index_factory(dim, config.factory_string(dim, num_db), metric)
    parameters = faiss.ParameterSpace()
    for name, value in config.build_parameters().items():
        parameters.set_index_parameter(faiss_index, name, value)
    if config.kind == "ivfpq":
        rows = training_sample(num_db, config)
        train = as_float32_matrix(xb[rows] if rows is not None else xb[:num_db], "xb")
        _train_ivfpq(faiss_index, train, config, dim)
    for name, value in config.search_parameters(num_db).items():
        parameters.set_index_parameter(faiss_index, name, value)
    return faiss_index


def _check_ivfpq_training(config: IndexConfig, dim: int, num_db: int) -> None:
    nlist = config.nlist or default_nlist(num_db)
    m = config.m or default_pq_m(dim)
    if dim % m:
        raise ValueError(f"PQ `m` must divide the descriptor size {dim}. Received: m={m}")
    if num_db < max(nlist, 2**config.nbits):
        raise ValueError(
            f"IVF-PQ needs at least max(nlist, 2**nbits) = {max(nlist, 2**config.nbits)} "
            f"database descriptors to train. Received: {num_db} (use index='flat')."
        )
    num_train = min(num_db, config.max_train_points)
    if config.opq and num_train < dim:
        # faiss's OPQ training corrupts memory (crash or endless loop) below D rows.
        raise ValueError(
            f"OPQ needs at least D = {dim} training descriptors to learn its D x D rotation. "
            f"Received: {num_train} (database size {num_db}, max_train_points "
            f"{config.max_train_points}); use opq=False."
        )


def _train_ivfpq(faiss_index, train: np.ndarray, config: IndexConfig, dim: int) -> None:
    """Trains the IVF-PQ index (and its OPQ rotation, learnt first on the sample).

    The rotation is orthonormal, so squared L2 distances (and the inner products derived from
    them) are the same in the rotated space. The PQ that OPQ alternates with must have the
    index's code size (faiss assumes 8 bits, which cannot be trained on fewer than 256 points);
    OPQ retrains it ~50 times, so its "too few training points" warning is silenced there.
    """
    if not config.opq:
        faiss_index.train(train)
        return
    wrapped = faiss.downcast_index(faiss_index)
    pretransform = faiss.downcast_index(wrapped.base_index) if config.refine_factor else wrapped
    rotation = faiss.downcast_VectorTransform(pretransform.chain.at(0))
    training_pq = faiss.ProductQuantizer(dim, config.m or default_pq_m(dim), config.nbits)
    training_pq.cp.min_points_per_centroid = 1
    rotation.pq = training_pq
    try:
        faiss_index.train(train)
    finally:
        rotation.pq = None  # `training_pq` dies with this frame: no dangling pointer


def inner_ivfpq(faiss_index):
    """The `faiss.IndexIVFPQ` inside an index built with index="ivfpq".

    Looks through `faiss.IndexRefineFlat` (refine_factor) and `faiss.IndexPreTransform` (opq).

    Args:
        faiss_index: from `build_index(xb, "ivfpq", ...)`.

    Returns:
        The IVF-PQ index (a view: setting `.nprobe` on it changes the searches of `faiss_index`).

    Example:
        >>> index = build_index(xb, "ivfpq", opq=True, refine_factor=10)  # doctest: +SKIP
        >>> inner_ivfpq(index).nprobe = 64  # doctest: +SKIP
    """
    index = faiss.downcast_index(faiss_index)
    for _ in range(3):
        if isinstance(index, faiss.IndexIVFPQ):
            return index
        if isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        elif isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        else:
            break
    raise ValueError(
        f"Expected an index built with index='ivfpq'. Received: {type(faiss_index).__name__}"
    )


def _iterate_blocks(num_rows: int, block_size: int, progress: bool, label: str):
    bar = ProgressBar(num_rows, label, enabled=progress and num_rows > block_size)
    for start in range(0, num_rows, block_size):
        stop = min(num_rows, start + block_size)
        yield start, stop
        bar.update(stop)


def _order_ties(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts each row by decreasing similarity, then increasing id (missing ids last)."""
    ids_key = np.where(I < 0, np.iinfo(np.int64).max, I)
    order = np.lexsort((ids_key, -D), axis=1)
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def _whole_row(faiss_index, xq_row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query against the whole database, ties by id, cut at k. Faiss scores it: a numpy
    product would differ from faiss's scores in the last bit and make results depend on k."""
    D, I = faiss_index.search(xq_row[None], faiss_index.ntotal)
    D, I = _order_ties(_as_similarities(faiss_index, D, I), I)
    return D[0, :k], I[0, :k]


def _as_similarities(faiss_index, D: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Faiss's scores as similarities (unit vectors: 1 - |x - y|^2 / 2 for an L2 index)."""
    if faiss_index.metric_type == faiss.METRIC_L2:
        return np.where(I >= 0, 1.0 - D / 2.0, -np.inf).astype(np.float32)
    return D


def search_index(faiss_index, xq, k: int, block_size: int = 2048, progress: bool = False):
    """Searches a built index in blocks of queries (bounded memory), best first.

    Args:
        faiss_index: from `build_index`.
        xq: `[Nq, D]` query descriptors.
        k: results per query; may exceed the database size (missing slots are -1 / -inf).
        block_size: queries per faiss call.
        progress: show a progress bar.

    Returns:
        `(D, I)`: `[Nq, k]` float32 similarities (inner products) and int64 database ids.
    """
    if int(k) < 1:
        raise ValueError(f"`k` must be a positive integer. Received: k={k}")
    k = int(k)
    xq = as_float32_matrix(xq, "xq")
    if xq.shape[1] != faiss_index.d:
        raise ValueError(
            f"Query descriptors have {xq.shape[1]} dims but the index holds {faiss_index.d}-d "
            f"descriptors. Received: xq.shape={xq.shape}"
        )
    num_db = faiss_index.ntotal
    depth = min(k, num_db)
    is_flat = isinstance(faiss_index, faiss.IndexFlat)
    # One extra result on exact search reveals ties across the cut-off.
    probe = min(depth + 1, num_db) if is_flat else depth
    D_all = np.full((len(xq), k), -np.inf, dtype=np.float32)
    I_all = np.full((len(xq), k), -1, dtype=np.int64)
    if depth == 0 or len(xq) == 0:
        return D_all, I_all
    for start, stop in _iterate_blocks(len(xq), block_size, progress, "query"):
        D, I = faiss_index.search(xq[start:stop], probe)
        D = _as_similarities(faiss_index, D, I)
        if is_flat and probe > depth:
            boundary_tie = D[:, depth] == D[:, depth - 1]
            for row in np.flatnonzero(boundary_tie):
                D[row, :depth], I[row, :depth] = _whole_row(faiss_index, xq[start + row], depth)
        D, I = _order_ties(D[:, :depth], I[:, :depth])
        D_all[start:stop, :depth] = D
        I_all[start:stop, :depth] = I
    return D_all, I_all


def search(xq, xb, k: int, index: str | IndexConfig = "flat", block_size: int = 2048, **params):
    """Finds the k most similar database descriptors of each query.

    Args:
        xq: `[Nq, D]` query descriptors (L2-normalised).
        xb: `[Ndb, D]` database descriptors (L2-normalised).
        k: results per query (may exceed Ndb; missing slots are id -1, similarity -inf).
        index: "flat" (exact), "ivfpq" or "hnsw" (see the module docstring), or an `IndexConfig`.
        block_size: queries per faiss call.
        **params: `IndexConfig` fields, e.g. `nprobe=64`, `m=128`.

    Returns:
        `(D, I)`: `[Nq, k]` similarities (decreasing) and database ids. Exact search orders
        equal similarities by ascending database id.

    Example:
        >>> xb = np.eye(3, dtype="float32")
        >>> D, I = search(xb[[2]], xb, k=2)
        >>> I.tolist()
        [[2, 0]]
    """
    return search_index(build_index(xb, index, **params), xq, k, block_size=block_size)
