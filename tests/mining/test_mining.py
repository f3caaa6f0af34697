"""`mine_tuples` against a brute-force float64 reference (plain loops over queries)."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.mining import NO_INDEX, mine_tuples


def _random_problem(num_queries=40, num_db=150, dim=16, seed=0):
    """Random descriptors and a random 2-D map: positives within 10 m, non-negatives within 25 m."""
    rng = np.random.default_rng(seed)
    query_desc = rng.normal(size=(num_queries, dim)).astype(np.float32)
    db_desc = rng.normal(size=(num_db, dim)).astype(np.float32)
    db_utm = rng.uniform(0, 120, size=(num_db, 2))
    query_utm = rng.uniform(0, 120, size=(num_queries, 2))
    dist = np.linalg.norm(query_utm[:, None] - db_utm[None], axis=-1)
    train_positives = [np.flatnonzero(row <= 10.0) for row in dist]
    non_negatives = [np.flatnonzero(row <= 25.0) for row in dist]
    return query_desc, db_desc, train_positives, non_negatives


def _sq_dist64(query, db):
    query, db = query.astype(np.float64), db.astype(np.float64)
    return ((query[:, None, :] - db[None, :, :]) ** 2).sum(-1)


def _reference(query_desc, db_desc, train_positives, non_negatives, num_negatives):
    """Positive = nearest 10 m positive; negatives = the N nearest of ALL db outside 25 m."""
    dist = _sq_dist64(query_desc, db_desc)
    positives, negatives = [], []
    for i in range(len(query_desc)):
        pos = train_positives[i]
        positives.append(pos[np.argmin(dist[i, pos])] if len(pos) else NO_INDEX)
        allowed = [j for j in range(len(db_desc)) if j not in set(non_negatives[i].tolist())]
        ranked = sorted(allowed, key=lambda j, i=i: dist[i, j])
        negatives.append(ranked[:num_negatives])
    return np.array(positives), np.array(negatives), dist


def test_positive_is_the_descriptor_nearest_training_positive_and_valid_flags():
    problem = _random_problem()
    ref_pos, _, _ = _reference(*problem, num_negatives=3)
    assert (ref_pos == NO_INDEX).any() and (ref_pos != NO_INDEX).sum() > 10  # both cases occur
    positive_idx, negative_idx, valid = mine_tuples(*problem, num_negatives=3, num_candidates=20)
    np.testing.assert_array_equal(positive_idx, ref_pos)
    np.testing.assert_array_equal(valid, ref_pos != NO_INDEX)
    assert negative_idx.shape == (40, 3) and positive_idx.dtype == np.int64


@pytest.mark.parametrize("query_block_size", [7, 512])
def test_with_all_candidates_the_negatives_are_the_true_hardest(query_block_size):
    problem = _random_problem()
    _, ref_neg, _ = _reference(*problem, num_negatives=5)
    _, negative_idx, _ = mine_tuples(
        *problem, num_negatives=5, num_candidates=150, query_block_size=query_block_size
    )
    np.testing.assert_array_equal(negative_idx, ref_neg)  # same ids, hardest first


def test_sampled_negatives_are_outside_25m_distinct_sorted_and_seeded():
    query_desc, db_desc, train_positives, non_negatives = _random_problem()
    dist = _sq_dist64(query_desc, db_desc)
    _, negative_idx, _ = mine_tuples(
        query_desc, db_desc, train_positives, non_negatives, 4, num_candidates=12, seed=3
    )
    for i, row in enumerate(negative_idx):
        assert not set(row.tolist()) & set(non_negatives[i].tolist())
        assert len(set(row.tolist())) == 4
        assert np.all(np.diff(dist[i, row]) > 0)
    again = mine_tuples(
        query_desc, db_desc, train_positives, non_negatives, 4, num_candidates=12, seed=3
    )[1]
    other = mine_tuples(
        query_desc, db_desc, train_positives, non_negatives, 4, num_candidates=12, seed=4
    )[1]
    np.testing.assert_array_equal(again, negative_idx)
    assert (other != negative_idx).any()


def test_candidates_are_a_uniform_sample_of_each_querys_negatives():
    # With num_negatives == num_candidates the negatives ARE the candidate set: over many seeds
    # every allowed id of a query must be drawn about equally often, and no excluded id ever.
    query_desc, db_desc, train_positives, non_negatives = _random_problem(num_queries=6, num_db=40)
    counts = np.zeros((6, 40))
    trials = 400
    for seed in range(trials):
        _, negative_idx, _ = mine_tuples(
            query_desc, db_desc, train_positives, non_negatives, 10, num_candidates=10, seed=seed
        )
        for i, row in enumerate(negative_idx):
            assert len(set(row.tolist())) == 10
            counts[i, row] += 1
    for i in range(6):
        allowed = np.setdiff1d(np.arange(40), non_negatives[i])
        assert counts[i, non_negatives[i]].sum() == 0
        expected = trials * 10 / len(allowed)
        # Binomial sd = sqrt(n p (1-p)) <= sqrt(expected); 5 sd is a generous band.
        assert np.all(np.abs(counts[i, allowed] - expected) < 5 * np.sqrt(expected))


def test_cache_makes_previous_hardest_negatives_candidates_again():
    problem = _random_problem(num_db=400)
    _, true_hardest, _ = _reference(*problem, num_negatives=5)
    _, without_cache, _ = mine_tuples(*problem, num_negatives=5, num_candidates=5, seed=1)
    _, with_cache, _ = mine_tuples(
        *problem, num_negatives=5, num_candidates=5, negative_cache=true_hardest, seed=1
    )
    assert (without_cache != true_hardest).any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(with_cache, true_hardest)


def test_cache_entries_that_are_non_negatives_or_repeated_are_ignored():
    query_desc, db_desc, train_positives, non_negatives = _random_problem(num_db=200)
    dist = _sq_dist64(query_desc, db_desc)
    # Poison the cache with each query's nearest non-negative, repeated: must never come out.
    nearest_excluded = np.array(
        [nn[np.argmin(dist[i, nn])] if len(nn) else NO_INDEX for i, nn in enumerate(non_negatives)]
    )
    # ... and with the true hardest negative three times: it must come out once.
    _, true_hardest, _ = _reference(query_desc, db_desc, train_positives, non_negatives, 1)
    hardest = true_hardest[:, 0]
    cache = np.stack(
        [nearest_excluded, hardest, hardest, nearest_excluded, hardest, np.full(40, NO_INDEX)],
        axis=1,
    )
    _, negative_idx, _ = mine_tuples(
        query_desc, db_desc, train_positives, non_negatives, 3, num_candidates=10,
        negative_cache=cache,
    )  # fmt: skip
    for i, row in enumerate(negative_idx):
        assert not set(row.tolist()) & set(non_negatives[i].tolist())
        assert len(set(row.tolist())) == 3
    np.testing.assert_array_equal(negative_idx[:, 0], hardest)


def test_fewer_negatives_than_requested_are_repeated_and_none_invalidates():
    rng = np.random.default_rng(0)
    query_desc = rng.normal(size=(3, 4)).astype(np.float32)
    db_desc = rng.normal(size=(6, 4)).astype(np.float32)
    train_positives = [np.array([0]), np.array([0]), np.array([0])]
    # Query 0: 2 negatives (4, 5); query 1: none; query 2: all 6 but 0 are negatives.
    non_negatives = [np.arange(4), np.arange(6), np.array([0])]
    with pytest.warns(UserWarning, match="1 of 3 queries have fewer than num_negatives=3"):
        positive_idx, negative_idx, valid = mine_tuples(
            query_desc, db_desc, train_positives, non_negatives, 3, num_candidates=3
        )
    dist = _sq_dist64(query_desc, db_desc)
    hard, easy = sorted([4, 5], key=lambda j: dist[0, j])
    np.testing.assert_array_equal(negative_idx[0], [hard, easy, hard])
    np.testing.assert_array_equal(negative_idx[1], [NO_INDEX] * 3)
    np.testing.assert_array_equal(valid, [True, False, True])
    assert positive_idx[1] == 0  # the positive is still reported


def test_unusable_database_images_are_never_chosen():
    query_desc, db_desc, train_positives, non_negatives = _random_problem()
    _, true_hardest, _ = _reference(query_desc, db_desc, train_positives, non_negatives, 3)
    ref_pos = _reference(query_desc, db_desc, train_positives, non_negatives, 1)[0]
    usable = np.ones(150, bool)
    usable[true_hardest[:, 0]] = False  # everyone's hardest negative ...
    usable[ref_pos[ref_pos != NO_INDEX][:5]] = False  # ... and some best positives
    sub = np.flatnonzero(usable)
    remap = np.full(150, NO_INDEX)
    remap[sub] = np.arange(len(sub))
    # Reference: the same problem with the unusable images removed from the database.
    expected_pos, expected_neg, _ = _reference(
        query_desc, db_desc[sub], [remap[p][remap[p] >= 0] for p in train_positives],
        [remap[n][remap[n] >= 0] for n in non_negatives], 3,
    )  # fmt: skip
    expected_pos = np.where(expected_pos == NO_INDEX, NO_INDEX, sub[expected_pos])
    positive_idx, negative_idx, valid = mine_tuples(
        query_desc, db_desc, train_positives, non_negatives, 3, num_candidates=150,
        negative_cache=true_hardest, db_usable=usable,
    )  # fmt: skip
    np.testing.assert_array_equal(positive_idx, expected_pos)
    np.testing.assert_array_equal(negative_idx, sub[expected_neg])
    np.testing.assert_array_equal(valid, expected_pos != NO_INDEX)


def test_float16_queries_give_the_same_tuples_as_their_float32_values():
    query_desc, db_desc, train_positives, non_negatives = _random_problem()
    half = query_desc.astype(np.float16)
    from_half = mine_tuples(half, db_desc, train_positives, non_negatives, 3, 20, seed=2)
    from_single = mine_tuples(
        half.astype(np.float32), db_desc, train_positives, non_negatives, 3, 20, seed=2
    )
    for a, b in zip(from_half, from_single, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"db_desc": np.zeros((150, 15), np.float32)}, "same dimension"),
        ({"train_positives": [np.array([0])] * 39}, "one id array per query"),
        ({"non_negatives": [np.array([150])] * 40}, r"ids outside \[0, 150\)"),
        ({"num_candidates": 2}, "at least `num_negatives`"),
        ({"negative_cache": np.zeros((40, 2), np.float32)}, "integer array"),
        ({"query_desc": np.zeros((40, 16), np.int32)}, "2-D float array"),
        ({"db_usable": np.ones(149, bool)}, "db_usable"),
        ({"db_desc": np.full((150, 16), np.nan, np.float32)}, r"db_desc.*NaN.*rows 0, 1"),
        (
            {
                "query_desc": np.pad(
                    np.ones((1, 16), np.float32), ((39, 0), (0, 0)), constant_values=np.inf
                )
            },
            r"query_desc.*rows 0, 1, 2, 3, 4, \.\.\.",
        ),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_value(change, message):
    query_desc, db_desc, train_positives, non_negatives = _random_problem()
    kwargs = dict(
        query_desc=query_desc,
        db_desc=db_desc,
        train_positives=train_positives,
        non_negatives=non_negatives,
        num_negatives=3,
        num_candidates=10,
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        mine_tuples(**kwargs)
