"""faiss search against numpy references (float64, ties ordered by ascending database id)."""
# ruff: noqa: E741  (faiss naming: D, I = index.search(xq, k))

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.index.faiss_search import (
    IndexConfig,
    as_index_config,
    build_index,
    default_nlist,
    default_pq_m,
    search,
    search_index,
)


def unit_rows(rng, count, dim):
    x = rng.normal(size=(count, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_top_k(xq, xb, k):
    """Brute force in float64: decreasing similarity, then ascending id."""
    similarities = xq.astype(np.float64) @ xb.astype(np.float64).T
    ids = np.broadcast_to(np.arange(len(xb)), similarities.shape)
    order = np.lexsort((ids, -similarities), axis=1)[:, :k]
    return np.take_along_axis(similarities, order, axis=1), order


def test_exact_search_matches_numpy_top10():
    rng = np.random.default_rng(0)
    xb, xq = unit_rows(rng, 3000, 64), unit_rows(rng, 120, 64)
    D, I = search(xq, xb, k=10)
    D_ref, I_ref = reference_top_k(xq, xb, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)
    assert D.dtype == np.float32 and I.dtype == np.int64


def test_exact_search_orders_ties_by_database_id_across_the_cutoff():
    # Small integer vectors: every dot product is exact in float32, so ties are true ties, and
    # many of them straddle the k-th position.
    rng = np.random.default_rng(1)
    xb = rng.integers(-1, 2, size=(2000, 12)).astype(np.float32)
    xq = rng.integers(-1, 2, size=(80, 12)).astype(np.float32)
    D, I = search(xq, xb, k=10, block_size=17)
    D_ref, I_ref = reference_top_k(xq, xb, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)
    # The data really has ties across the cut-off (otherwise this test proves nothing).
    _, deeper = reference_top_k(xq, xb, 11)
    s = xq.astype(np.float64) @ xb.T
    assert np.any(
        np.take_along_axis(s, deeper[:, 9:10], 1) == np.take_along_axis(s, deeper[:, 10:11], 1)
    )


def test_a_tie_at_the_cutoff_leaves_every_score_as_any_other_k_gives_it():
    # Real-valued vectors (faiss's and numpy's products differ in the last bit) with one
    # database vector repeated: each query's third best ties at k=3, not at k=10.
    rng = np.random.default_rng(3)
    xb, xq = unit_rows(rng, 400, 64), unit_rows(rng, 60, 64)
    index = build_index(xb)
    _, I = search_index(index, xq, 10)
    xb_tied = np.concatenate([xb, xb[I[:, 2]]])
    index = build_index(xb_tied)
    D3, I3 = search_index(index, xq, 3)
    D10, I10 = search_index(index, xq, 10)
    tied = D10[:, 2] == D10[:, 3]  # across k=3's cut-off (where no other copy came first)
    assert tied.sum() >= 30, tied.sum()
    np.testing.assert_array_equal(I3, I10[:, :3])
    np.testing.assert_array_equal(D3, D10[:, :3])  # to the bit: a result never depends on k


def test_k_larger_than_database_pads_with_minus_one():
    xb = np.eye(4, dtype=np.float32)
    D, I = search(xb[[1]], xb, k=6)
    assert I[0, 0] == 1 and sorted(I[0, :4].tolist()) == [0, 1, 2, 3]
    assert I[0, 1:4].tolist() == [0, 2, 3]  # equal similarity 0: ascending id
    assert I[0, 4:].tolist() == [-1, -1]
    assert np.all(np.isneginf(D[0, 4:]))


def test_blocked_search_equals_single_call():
    rng = np.random.default_rng(2)
    xb, xq = unit_rows(rng, 500, 16), unit_rows(rng, 50, 16)
    index = build_index(xb)
    D1, I1 = search_index(index, xq, 7, block_size=1000)
    D2, I2 = search_index(index, xq, 7, block_size=6)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def clustered(rng, num_clusters, per_cluster, dim, noise):
    centres = unit_rows(rng, num_clusters, dim)
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


@pytest.mark.parametrize(
    "kind,params",
    [
        ("ivfpq", {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 8}),
        ("ivfpq", {"nlist": 16, "m": 8, "nbits": 6, "refine_factor": 4}),
        ("hnsw", {}),
    ],
)
def test_approximate_indexes_find_the_exact_neighbours_on_clustered_data(kind, params):
    rng = np.random.default_rng(3)
    xb, centres = clustered(rng, 40, 100, 32, noise=0.5)
    xq = xb[rng.choice(len(xb), 100, replace=False)] + 0.05 * rng.normal(size=(100, 32)).astype(
        np.float32
    )
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    D, I = search(xq, xb, k=5, index=kind, **params)
    _, I_ref = reference_top_k(xq, xb, 5)
    assert np.mean(I[:, 0] == I_ref[:, 0]) >= 0.9
    assert np.all(np.diff(D, axis=1) <= 1e-6)  # best first
    # Similarities are inner products (converted from L2 for these indexes).
    exact = np.sum(xq[:, None, :] * xb[I], axis=-1)
    tolerance = 0.2 if kind == "ivfpq" and not params.get("refine_factor") else 1e-4
    np.testing.assert_allclose(D, exact, atol=tolerance)


def test_index_defaults_and_validation():
    assert default_pq_m(4096) == 64 and default_pq_m(256) == 32 and default_pq_m(100) == 10
    assert default_nlist(100_000) == 1024 and default_nlist(50) == 1
    assert as_index_config("ivfpq", nprobe=4, m=None).nprobe == 4
    with pytest.raises(ValueError, match="Unknown index type"):
        IndexConfig(kind="lsh")
    with pytest.raises(ValueError, match="Unknown index parameters"):
        as_index_config("flat", nprob=3)
    with pytest.raises(ValueError, match="must divide"):
        build_index(np.ones((300, 10), np.float32), "ivfpq", m=3, nlist=2)
    with pytest.raises(ValueError, match="non-finite"):
        search(np.full((1, 4), np.nan, np.float32), np.eye(4, dtype=np.float32), 1)
    with pytest.raises(ValueError, match="dims"):
        search(np.ones((1, 3), np.float32), np.eye(4, dtype=np.float32), 1)
