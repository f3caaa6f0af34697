"""Recall@N against a brute-force numpy reference (float64 loops)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sare_tf.evaluation.recall import (
    correct_retrievals,
    evaluate_retrieval,
    queries_without_positive,
    recall_at_n,
    recall_from_ranking,
)


def brute_force_recall(query_desc, db_desc, query_utm, db_utm, ns, dist_thr):
    """Per query: rank every db image (similarity desc, id asc), look for a hit in the top N."""
    hits = {n: 0 for n in ns}
    for q in range(len(query_desc)):
        similarity = [float(np.dot(query_desc[q].astype(np.float64), x)) for x in db_desc]
        ranking = sorted(range(len(db_desc)), key=lambda i: (-similarity[i], i))
        correct = [
            (query_utm[q, 0] - db_utm[i, 0]) ** 2 + (query_utm[q, 1] - db_utm[i, 1]) ** 2
            <= dist_thr**2
            for i in ranking
        ]
        for n in ns:
            hits[n] += any(correct[:n])
    return {n: hits[n] / len(query_desc) for n in ns}


def tie_heavy_problem(seed, num_db=60, num_queries=40):
    rng = np.random.default_rng(seed)
    # Integer descriptors: exact dot products with many ties.
    db_desc = rng.integers(-1, 2, size=(num_db, 6)).astype(np.float32)
    query_desc = rng.integers(-1, 2, size=(num_queries, 6)).astype(np.float32)
    db_utm = rng.uniform(0, 200, size=(num_db, 2)).round()
    query_utm = rng.uniform(0, 200, size=(num_queries, 2)).round()
    # Exactly on the 25 m boundary (3-4-5 triangle): counts as within.
    query_utm[0] = db_utm[0] + [15.0, 20.0]
    # Far from everything: no positive in the database.
    query_utm[1:4] = [[5000.0, 5000.0], [-3000.0, 10.0], [0.0, 9000.0]]
    return query_desc, db_desc, query_utm, db_utm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_n_equals_brute_force_with_ties_no_positive_and_large_n(seed):
    query_desc, db_desc, query_utm, db_utm = tie_heavy_problem(seed)
    ns = (1, 2, 5, 10, 20, 59, 60, 61, 100)  # N around and above the database size (60)
    got = recall_at_n(query_desc, db_desc, query_utm, db_utm, ns=ns, dist_thr=25.0)
    expected = brute_force_recall(query_desc, db_desc, query_utm, db_utm, ns, 25.0)
    assert got == expected
    # With the whole database ranked, exactly the queries that have a positive succeed.
    answerable = sum(
        any(np.sum((q - db_utm) ** 2, axis=1) <= 25.0**2) for q in query_utm.astype(np.float64)
    )
    assert got[60] == got[100] == answerable / len(query_utm)
    assert answerable <= len(query_utm) - 3


def test_queries_without_positive_are_failures_and_are_reported(caplog):
    query_desc, db_desc, query_utm, db_utm = tie_heavy_problem(0)
    result = evaluate_retrieval(query_desc, db_desc, query_utm, db_utm, ns=(1, 60))
    lonely = [
        q
        for q in range(len(query_utm))
        if not any(np.sum((query_utm[q] - db_utm) ** 2, 1) <= 625.0)
    ]
    assert {1, 2, 3} <= set(lonely)
    assert result.num_without_positive == len(lonely)
    assert result.num_queries == 40
    assert np.all(result.first_correct_rank[lonely] == -1)
    # Ranking the whole database finds every answerable query, and only those.
    assert result.recalls[60] == (40 - result.num_without_positive) / 40
    with caplog.at_level(logging.WARNING, logger="sare_tf.evaluation"):
        recall_at_n(query_desc, db_desc, query_utm, db_utm, ns=(1,))
    assert f"{len(lonely)} of 40 queries have no database image" in caplog.text


def test_boundary_distance_counts_as_within():
    assert queries_without_positive([[15.0, 20.0]], [[0.0, 0.0]], 25.0).tolist() == [False]
    assert queries_without_positive([[15.0, 20.01]], [[0.0, 0.0]], 25.0).tolist() == [True]
    correct = correct_retrievals([[0, -1]], [[15.0, 20.0]], [[0.0, 0.0]], 25.0)
    assert correct.tolist() == [[True, False]]


def test_hand_worked_example():
    # 3 database images on a line; queries retrieve by descriptor.
    db_desc = np.eye(3, dtype=np.float32)
    db_utm = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    query_desc = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.2, 1]], dtype=np.float32)
    # query 0 at db 0 (R@1 hit); query 1 near db 1 but looks like db 0 (hit at rank 2);
    # query 2 at 300 m: no positive.
    query_utm = np.array([[0.0, 10.0], [110.0, 0.0], [300.0, 0.0]])
    result = evaluate_retrieval(query_desc, db_desc, query_utm, db_utm, ns=(1, 2, 3, 10))
    assert result.recalls == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 10: 2 / 3}
    assert result.first_correct_rank.tolist() == [0, 1, -1]
    assert result.num_without_positive == 1
    np.testing.assert_allclose(result.curve(4), [1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert result.metrics() == {
        "recall@1": 1 / 3,
        "recall@2": 2 / 3,
        "recall@3": 2 / 3,
        "recall@10": 2 / 3,
    }


def test_unreadable_queries_fail_and_unreadable_db_images_are_not_retrieved():
    db_desc = np.eye(3, dtype=np.float32)
    db_utm = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    query_desc = np.eye(3, dtype=np.float32)
    query_utm = db_utm.copy()
    result = evaluate_retrieval(
        query_desc,
        db_desc,
        query_utm,
        db_utm,
        ns=(1, 3),
        invalid_queries=np.array([False, True, False]),
        invalid_db=np.array([False, False, True]),
    )
    # Query 1 would be a hit but is unreadable; query 2's only positive (db 2) is unreadable.
    assert result.recalls == {1: 1 / 3, 3: 1 / 3}
    assert result.num_invalid_queries == 1


def test_recall_from_ranking_with_padding_and_depth_limits():
    result = recall_from_ranking(
        [[2, -1], [-1, -1]], [[0, 0], [0, 0]], [[500, 0], [0, 0], [1, 1]], ns=(1, 2)
    )
    assert result.recalls == {1: 0.5, 2: 0.5}
    with pytest.raises(ValueError, match="Only the top 2"):
        result.recall(3)


def test_input_validation():
    x = np.eye(2, dtype=np.float32)
    utm = np.zeros((2, 2))
    with pytest.raises(ValueError, match="positive integers"):
        recall_at_n(x, x, utm, utm, ns=(0, 5))
    with pytest.raises(ValueError, match="same number of rows"):
        recall_at_n(x, x, np.zeros((3, 2)), utm)
    with pytest.raises(ValueError, match="at least one query"):
        recall_at_n(np.zeros((0, 2), np.float32), x, np.zeros((0, 2)), utm)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        recall_at_n(x, x, np.zeros((2, 3)), utm)
