"""Sequence matching on the similarity matrix (SeqSLAM's idea, Milford and Wyeth, ICRA 2012),
for traversals recorded along the same route (`sare_tf.data.traversals`).

A single frame can look like many places; a run of consecutive frames rarely does. The score of
database frame j for query frame i is the mean descriptor similarity along the diagonal through
(i, j): `mean_{k=-h..h} S[i+k, j+k]` over the offsets inside both traversals, `L = 2h + 1` frames,
velocity 1 (both traversals at the same pace: frame-aligned datasets such as Nordland). Ranking by
it replaces the single-frame ranking. The score is computed in blocks of queries (memory
`block x Ndb`), never as the full `Q x Ndb` matrix at once beyond the block's window.
"""

from __future__ import annotations

import numpy as np

from sare_tf.evaluation.recall import check_ns, recall_from_ranking


def _check_length(length) -> int:
    if isinstance(length, bool) or int(length) != length or length < 1 or length % 2 == 0:
        raise ValueError(f"The sequence length must be an odd number >= 1. Received: {length!r}")
    return int(length)


def sequence_scores(query_desc, db_desc, length: int, rows=None) -> np.ndarray:
    """`[len(rows), Ndb]` sequence scores of the queries `rows` (default all), float32."""
    length = _check_length(length)
    half = length // 2
    xq = np.asarray(query_desc, np.float32)
    xb = np.asarray(db_desc, np.float32)
    rows = np.arange(len(xq)) if rows is None else np.asarray(rows)
    first, last = int(rows.min()), int(rows.max())
    low, high = max(0, first - half), min(len(xq), last + half + 1)
    similarity = xq[low:high] @ xb.T  # the window of query rows the block needs
    total = np.zeros((len(rows), len(xb)), np.float64)
    count = np.zeros((len(rows), len(xb)), np.float64)
    for offset in range(-half, half + 1):
        source = rows + offset  # query frame i + k ...
        inside = (source >= 0) & (source < len(xq))
        if not inside.any():
            continue
        band = similarity[source[inside] - low]  # rows S[i + k, :]
        # ... against database frame j + k: shift the columns by -k.
        shifted = np.full_like(band, np.nan)
        if offset >= 0:
            shifted[:, : len(xb) - offset] = band[:, offset:]
        else:
            shifted[:, -offset:] = band[:, : len(xb) + offset]
        valid = ~np.isnan(shifted)
        total[inside] += np.where(valid, shifted, 0.0)
        count[inside] += valid
    return (total / np.maximum(count, 1)).astype(np.float32)


def sequence_ranking(query_desc, db_desc, length: int, depth: int, block: int = 256) -> np.ndarray:
    """`[Q, depth]` database ids by descending sequence score (ties by ascending id)."""
    num_queries, num_db = len(query_desc), len(db_desc)
    depth = min(int(depth), num_db)
    ranking = np.zeros((num_queries, depth), np.int64)
    for start in range(0, num_queries, block):
        rows = np.arange(start, min(num_queries, start + block))
        scores = sequence_scores(query_desc, db_desc, length, rows)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        ranking[rows] = order
    return ranking


def evaluate_sequence_matching(query_desc, db_desc, query_utm, db_utm, length: int,
                               ns=(1, 5, 10, 20), dist_thr: float = 25.0):  # fmt: skip
    """Recall@N of the sequence ranking (a `RecallResult`)."""

    ns = check_ns(ns)
    ranking = sequence_ranking(query_desc, db_desc, length, depth=max(max(ns), 25))
    return recall_from_ranking(ranking, query_utm, db_utm, ns, dist_thr)
