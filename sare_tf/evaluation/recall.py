"""Recall@N for place recognition: the share of queries with a correct database image in the top N.

A retrieval is correct when the database image lies within `dist_thr` metres of the query
(25 m on Pittsburgh and Tokyo), using `|q - x|^2 <= dist_thr^2` on UTM coordinates (the dataset's
`posDistSqThr`). A query without any database image within `dist_thr` can never be answered: it
counts as a failure (it stays in the denominator) and the number of such queries is reported.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy.spatial import cKDTree

from sare_tf.evaluation.protocols import ranked_search
from sare_tf.index.config import IndexConfig
from sare_tf.index.faiss_search import as_float32_matrix, build_index

logger = logging.getLogger("sare_tf.evaluation")

DEFAULT_NS = (1, 5, 10, 20)


def check_ns(ns) -> tuple[int, ...]:
    """Validates the list of N (positive integers), returned sorted and de-duplicated."""
    values = tuple(sorted({int(n) for n in np.atleast_1d(ns)}))
    if not values or values[0] < 1 or any(float(n) != int(n) for n in np.atleast_1d(ns)):
        raise ValueError(f"`ns` must be positive integers. Received: ns={ns!r}")
    return values


def _as_utm(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape [N, 2]. Received: {name}.shape={array.shape}")
    return array


@dataclasses.dataclass
class RecallResult:
    """Recall@N with what is needed to explain it.

    Attributes:
        recalls: `{N: fraction}` for the requested N.
        first_correct_rank: `[Q]` 0-based rank of each query's first correct retrieval, -1 when
            none is within the searched depth.
        depth: how many results were inspected per query (N above it cannot be answered,
            except when `depth` covers the whole database).
        num_db: database size (recall@N for N >= num_db equals recall@num_db).
        num_queries: queries evaluated (the denominator).
        num_without_positive: queries with no database image within `dist_thr` (failures).
        num_invalid_queries: queries whose image could not be read (failures).
    """

    recalls: dict[int, float]
    first_correct_rank: np.ndarray
    depth: int
    num_db: int
    num_queries: int
    num_without_positive: int = 0
    num_invalid_queries: int = 0

    def recall(self, n: int) -> float:
        """Recall@n (fraction) for any n <= depth, or any n when the whole database was ranked."""
        if n < 1:
            raise ValueError(f"N must be >= 1. Received: n={n}")
        if n > self.depth and self.depth < self.num_db:
            raise ValueError(f"Only the top {self.depth} results were searched. Received: n={n}")
        if self.num_queries == 0:
            return 0.0
        hits = (self.first_correct_rank >= 0) & (self.first_correct_rank < n)
        return float(np.count_nonzero(hits)) / self.num_queries

    def curve(self, max_n: int = 25) -> np.ndarray:
        """Recall@1..max_n as a `[max_n]` float array."""
        return np.array([self.recall(n) for n in range(1, max_n + 1)])

    def metrics(self) -> dict[str, float]:
        """`{"recall@1": .., "recall@5": ..}` as fractions."""
        return {f"recall@{n}": value for n, value in self.recalls.items()}

    def subset(self, query_mask) -> RecallResult:
        """The same measurement restricted to the queries of a `[Q]` bool mask."""
        mask = np.asarray(query_mask, dtype=bool)
        if mask.shape != self.first_correct_rank.shape:
            raise ValueError(
                f"`query_mask` must be [{len(self.first_correct_rank)}]. Received: {mask.shape}"
            )
        part = RecallResult({}, self.first_correct_rank[mask], self.depth, self.num_db,
                            int(mask.sum()))  # fmt: skip
        part.recalls = {n: part.recall(n) for n in self.recalls}
        return part


def recall_by_condition(result: RecallResult, query_attributes: dict) -> dict:
    """Recall@N per value of each per-query condition (MSLS day / night, view direction, city).

    Returns:
        `{condition: {value: {"num_queries": k, "recall@1": .., ...}}}`, values sorted.
    """
    breakdown = {}
    for condition, values in query_attributes.items():
        values = np.asarray(values, str)
        breakdown[condition] = {
            value: {"num_queries": int((values == value).sum()),
                    **result.subset(values == value).metrics()}
            for value in sorted(set(values.tolist()))
        }  # fmt: skip
    return breakdown


def correct_retrievals(retrieved_ids, query_utm, db_utm, dist_thr: float = 25.0) -> np.ndarray:
    """Which retrieved database images are within `dist_thr` metres of their query.

    Args:
        retrieved_ids: `[Q, K]` database ids, best first; -1 marks an empty slot.
        query_utm: `[Q, 2]` positions in metres.
        db_utm: `[Ndb, 2]` positions in metres.
        dist_thr: the radius in metres.

    Returns:
        `[Q, K]` bool, False for empty slots.
    """
    retrieved_ids = np.asarray(retrieved_ids, dtype=np.int64)
    query_utm, db_utm = _as_utm(query_utm, "query_utm"), _as_utm(db_utm, "db_utm")
    valid = retrieved_ids >= 0
    positions = db_utm[np.where(valid, retrieved_ids, 0)]  # [Q, K, 2]
    squared = np.sum((positions - query_utm[:, None, :]) ** 2, axis=-1)
    return valid & (squared <= float(dist_thr) ** 2)


def correct_by_label(retrieved_ids, query_labels, db_labels) -> np.ndarray:
    """Which retrieved database images share their query's place label (Sf-0 protocol).

    Args:
        retrieved_ids: `[Q, K]` database ids, best first; -1 marks an empty slot.
        query_labels: `[Q]` labels ("" = unlabelled: never correct).
        db_labels: `[Ndb]` labels ("" never matches).

    Returns:
        `[Q, K]` bool, False for empty slots.
    """
    retrieved_ids = np.asarray(retrieved_ids, dtype=np.int64)
    query_labels, db_labels = np.asarray(query_labels, str), np.asarray(db_labels, str)
    valid = retrieved_ids >= 0
    retrieved_labels = db_labels[np.where(valid, retrieved_ids, 0)]
    return valid & (retrieved_labels == query_labels[:, None]) & (query_labels[:, None] != "")


def queries_without_label_match(query_labels, db_labels) -> np.ndarray:
    """`[Q]` bool: True for queries whose label no database image carries (or unlabelled)."""
    query_labels, db_labels = np.asarray(query_labels, str), np.asarray(db_labels, str)
    return ~np.isin(query_labels, db_labels[db_labels != ""]) | (query_labels == "")


def queries_without_positive(query_utm, db_utm, dist_thr: float = 25.0) -> np.ndarray:
    """`[Q]` bool: True for queries with no database image within `dist_thr` metres."""
    query_utm, db_utm = _as_utm(query_utm, "query_utm"), _as_utm(db_utm, "db_utm")
    if len(db_utm) == 0:
        return np.ones(len(query_utm), dtype=bool)
    tree = cKDTree(db_utm)
    # Count within the radius (inclusive) rather than compare a nearest distance, so that the
    # boundary follows the same `<=` rule as `correct_retrievals`.
    counts = tree.query_ball_point(query_utm, r=float(dist_thr), return_length=True)
    return np.asarray(counts) == 0


def recall_from_correct(
    is_correct, ns=DEFAULT_NS, num_db: int | None = None, invalid_queries=None
) -> RecallResult:
    """Recall@N from a `[Q, K]` table of correct retrievals (best first).

    Args:
        is_correct: `[Q, K]` bool.
        ns: the N to report. N above K is allowed when K covers the whole database (`num_db`).
        num_db: database size (default K).
        invalid_queries: optional `[Q]` bool of queries to count as failures whatever they
            retrieved (e.g. unreadable images).

    Returns:
        A `RecallResult` (without the no-positive count, which needs positions).
    """
    is_correct = np.asarray(is_correct, dtype=bool)
    if is_correct.ndim != 2:
        raise ValueError(f"`is_correct` must be [Q, K]. Received: shape={is_correct.shape}")
    ns = check_ns(ns)
    num_queries, depth = is_correct.shape
    num_db = depth if num_db is None else int(num_db)
    has_hit = is_correct.any(axis=1)
    first = np.where(has_hit, np.argmax(is_correct, axis=1), -1)
    num_invalid = 0
    if invalid_queries is not None:
        invalid_queries = np.asarray(invalid_queries, dtype=bool)
        first = np.where(invalid_queries, -1, first)
        num_invalid = int(np.count_nonzero(invalid_queries))
    result = RecallResult({}, first, depth, num_db, num_queries, 0, num_invalid)
    result.recalls = {n: result.recall(n) for n in ns}
    return result


def recall_from_ranking(
    retrieved_ids,
    query_utm,
    db_utm,
    ns=DEFAULT_NS,
    dist_thr: float = 25.0,
    invalid_queries=None,
    num_searchable: int | None = None,
    query_labels=None,
    db_labels=None,
) -> RecallResult:
    """Recall@N of given rankings (e.g. after a protocol's post-processing).

    With `query_labels` and `db_labels` the ground truth is by label (a retrieval is correct when
    it shares the query's label, Sf-0's protocol) instead of by distance.

    Args:
        retrieved_ids: `[Q, K]` database ids, best first (-1: empty slot).
        query_utm: `[Q, 2]` query positions in metres.
        db_utm: `[Ndb, 2]` database positions in metres.
        ns: the N to report.
        dist_thr: correct-retrieval radius in metres.
        invalid_queries: optional `[Q]` bool, counted as failures.
        num_searchable: how many database images could be retrieved (default all); when the
            rankings are that long, any N may be asked for.

    Returns:
        A `RecallResult`.
    """
    by_label = query_labels is not None and db_labels is not None
    if by_label:
        is_correct = correct_by_label(retrieved_ids, query_labels, db_labels)
        without = queries_without_label_match(query_labels, db_labels)
    else:
        is_correct = correct_retrievals(retrieved_ids, query_utm, db_utm, dist_thr)
        without = queries_without_positive(query_utm, db_utm, dist_thr)
    num_searchable = len(db_utm) if num_searchable is None else int(num_searchable)
    result = recall_from_correct(
        is_correct, ns, num_db=num_searchable, invalid_queries=invalid_queries
    )
    result.num_without_positive = int(np.count_nonzero(without))
    return result


def log_recall_caveats(result: RecallResult, label: str = "") -> None:
    """Logs (warning level) the queries that were counted as failures for lack of ground truth."""
    prefix = f"{label}: " if label else ""
    if result.num_without_positive:
        logger.warning(
            "%s%d of %d queries have no database image within the positive radius; they count as "
            "failures in Recall@N.",
            prefix,
            result.num_without_positive,
            result.num_queries,
        )
    if result.num_invalid_queries:
        logger.warning(
            "%s%d of %d query images could not be read; they count as failures in Recall@N.",
            prefix,
            result.num_invalid_queries,
            result.num_queries,
        )


def evaluate_retrieval(
    query_desc,
    db_desc,
    query_utm,
    db_utm,
    ns=DEFAULT_NS,
    dist_thr: float = 25.0,
    index: str | IndexConfig = "flat",
    protocol=None,
    max_n: int | None = None,
    invalid_queries=None,
    invalid_db=None,
    block_size: int = 2048,
    progress: bool = False,
    query_labels=None,
    db_labels=None,
) -> RecallResult:
    """Searches the database for every query and measures Recall@N.

    Args:
        query_desc: `[Q, D]` query descriptors (L2-normalised).
        db_desc: `[Ndb, D]` database descriptors.
        query_utm: `[Q, 2]` query positions in metres.
        db_utm: `[Ndb, 2]` database positions in metres.
        ns: the N to report; N larger than the database is allowed.
        dist_thr: correct-retrieval radius in metres.
        index: "flat" (exact), "ivfpq", "hnsw" or an `IndexConfig`.
        protocol: optional `sare_tf.evaluation.protocols.RankingProtocol` (Tokyo 24/7 panorama
            suppression, TokyoTM time filter) applied to the ranking before counting.
        max_n: also search deep enough for Recall@max_n (e.g. 25 for a curve).
        invalid_queries: `[Q]` bool, queries to count as failures (unreadable images).
        invalid_db: `[Ndb]` bool, database images to leave out of the index.
        block_size: queries per faiss call.
        progress: show a progress bar while searching.
        query_labels, db_labels: place labels for label ground truth (then `dist_thr` and the
            positions are not used to judge retrievals).

    Returns:
        A `RecallResult`.
    """

    ns = check_ns(ns)
    xq, xb = as_float32_matrix(query_desc, "query_desc"), as_float32_matrix(db_desc, "db_desc")
    query_utm, db_utm = _as_utm(query_utm, "query_utm"), _as_utm(db_utm, "db_utm")
    if len(xq) != len(query_utm) or len(xb) != len(db_utm):
        raise ValueError(
            "Descriptors and positions must have the same number of rows. Received: "
            f"query_desc={xq.shape}, query_utm={query_utm.shape}, db_desc={xb.shape}, "
            f"db_utm={db_utm.shape}"
        )
    if len(xq) == 0 or len(xb) == 0:
        raise ValueError(
            f"Recall@N needs at least one query and one database image. Received: "
            f"{len(xq)} queries, {len(xb)} database images."
        )
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(
            f"Query and database descriptors differ in size. Received: {xq.shape[1]} vs {xb.shape[1]}"
        )
    kept_db = np.arange(len(xb))
    if invalid_db is not None and np.any(invalid_db):
        kept_db = np.flatnonzero(~np.asarray(invalid_db, dtype=bool))
        if len(kept_db) == 0:
            raise ValueError("No readable database image is left to search.")
        xb = xb[kept_db]
    depth = min(max(max(ns), max_n or 0), len(xb))
    faiss_index = build_index(xb, index)
    retrieved = ranked_search(
        faiss_index,
        xq,
        depth,
        protocol=protocol,
        db_ids=kept_db,
        block_size=block_size,
        progress=progress,
    )
    # `retrieved` holds original database ids, so positions come from the full table.
    return recall_from_ranking(
        retrieved, query_utm, db_utm, ns, dist_thr, invalid_queries, num_searchable=len(kept_db),
        query_labels=query_labels, db_labels=db_labels,
    )  # fmt: skip


def recall_at_n(
    query_desc,
    db_desc,
    query_utm,
    db_utm,
    ns=DEFAULT_NS,
    dist_thr: float = 25.0,
    **kwargs,
) -> dict[int, float]:
    """Recall@N: the fraction of queries with a database image within `dist_thr` in their top N.

    Retrieval is exact by default (inner product on unit descriptors, ties ordered by ascending
    database index). Queries without any database image within `dist_thr` count as failures;
    their number is logged as a warning (use `evaluate_retrieval` to get it as a value). N larger
    than the database gives the recall of the full ranking.

    Args:
        query_desc: `[Q, D]` query descriptors (L2-normalised).
        db_desc: `[Ndb, D]` database descriptors (L2-normalised).
        query_utm: `[Q, 2]` query positions (metres).
        db_utm: `[Ndb, 2]` database positions (metres).
        ns: the N to report.
        dist_thr: correct-retrieval radius (metres); `|q - x|^2 <= dist_thr^2` counts.
        **kwargs: `evaluate_retrieval`'s other arguments: `index` ("flat" by default, "ivfpq",
            "hnsw" or an `IndexConfig`), `protocol`, ...

    Returns:
        `{N: fraction}`.

    Example:
        >>> xb = np.eye(3, dtype="float32")
        >>> recall_at_n(xb[:2], xb, [[0, 0], [0, 100]], [[0, 0], [0, 100], [500, 0]], ns=(1,))
        {1: 1.0}

    Reference:
        Arandjelovic et al., "NetVLAD", CVPR 2016, sec. 5.1 (the protocol followed by Liu et al.,
        SARE, ICCV 2019, sec. 5).
    """
    result = evaluate_retrieval(
        query_desc, db_desc, query_utm, db_utm, ns=ns, dist_thr=dist_thr, **kwargs
    )
    log_recall_caveats(result)
    return result.recalls
