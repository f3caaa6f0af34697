"""IVF-PQ with an OPQ rotation: validity, what exhaustive probing and exact re-ranking guarantee,
that the rotation pays off where PQ is weakest, configuration, and the `--opq` CLI flag."""
# ruff: noqa: E741  (faiss naming: D, I = index.search(xq, k))

from __future__ import annotations

import dataclasses
import importlib
import json

import faiss
import numpy as np
import pytest

from sare_tf.index.faiss_search import (
    IndexConfig,
    as_index_config,
    build_index,
    inner_ivfpq,
    search,
    search_index,
)

DIM = 32


def unbalanced_clusters(seed, num_clusters=40, per_cluster=60, num_queries=80):
    """Clustered unit vectors whose coordinate i has variance ~ 1 / i^2 (unwhitened-PCA-like):
    the first of 8 PQ sub-vectors holds most of the energy, the case where plain PQ is weakest.

    Returns `(xb [2400, 32], xq [80, 32])`, float32, L2-normalised.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, DIM))
    labels = rng.integers(0, num_clusters, size=num_clusters * per_cluster + num_queries)
    x = centres[labels] + 0.6 * rng.normal(size=(len(labels), DIM))
    x *= 1.0 / np.arange(1, DIM + 1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    return x[num_queries:], x[:num_queries]


def reference_top_k(xq, xb, k):
    """Brute force in float64: decreasing similarity, then ascending id."""
    similarities = xq.astype(np.float64) @ xb.astype(np.float64).T
    ids = np.broadcast_to(np.arange(len(xb)), similarities.shape)
    order = np.lexsort((ids, -similarities), axis=1)[:, :k]
    return np.take_along_axis(similarities, order, axis=1), order


def rotation_of(faiss_index) -> np.ndarray:
    transform = faiss.downcast_VectorTransform(faiss_index.chain.at(0))
    assert isinstance(transform, faiss.OPQMatrix)
    return faiss.vector_to_array(transform.A).reshape(transform.d_out, transform.d_in)


PQ = {"nlist": 16, "m": 8, "nbits": 6}


@pytest.fixture(scope="module")
def data():
    return unbalanced_clusters(seed=0)


@pytest.fixture(scope="module")
def opq_index(data):
    return build_index(data[0], "ivfpq", opq=True, nprobe=4, **PQ)


def test_opq_ivfpq_results_are_valid_inner_products_of_its_reconstructions(data, opq_index):
    xb, xq = data
    assert isinstance(opq_index, faiss.IndexPreTransform)
    rotation = rotation_of(opq_index)
    # A learned orthonormal rotation (so L2 -> inner product conversion stays exact), not identity.
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(DIM), atol=1e-5)
    assert np.abs(rotation - np.eye(DIM)).max() > 0.3
    D, I = search_index(opq_index, xq, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert np.all((I >= 0) & (I < len(xb)))
    assert all(len(set(row)) == 10 for row in I.tolist())
    assert np.all(np.diff(D, axis=1) <= 0)
    # Similarities are 1 - |q - x_hat|^2 / 2 for the index's own reconstruction x_hat of each
    # returned id (rotated back to the input space), recomputed here in float64.
    x_hat = opq_index.reconstruct_n(0, opq_index.ntotal).astype(np.float64)
    distances = np.sum((xq[:, None, :].astype(np.float64) - x_hat[I]) ** 2, axis=-1)
    np.testing.assert_allclose(D, 1.0 - distances / 2.0, atol=1e-4)


def test_all_cells_probed_is_brute_force_over_the_rotated_codes(data, opq_index):
    """With nprobe = nlist, IVF-PQ ranks every database code: the result is the exact top-k of
    the index's own reconstructions (not of the raw vectors, which PQ has lost)."""
    xb, xq = data
    index = build_index(xb, "ivfpq", opq=True, nprobe=PQ["nlist"], **PQ)
    assert inner_ivfpq(index).nprobe == PQ["nlist"]
    x_hat = index.reconstruct_n(0, index.ntotal).astype(np.float64)
    # Rank the reconstructions by L2 distance (what the index minimises), in float64.
    l2 = np.sum((xq[:, None, :].astype(np.float64) - x_hat[None]) ** 2, axis=-1)
    expected = 1.0 - np.sort(l2, axis=1)[:, :10] / 2.0
    D, I = search_index(index, xq, 10)
    np.testing.assert_allclose(D, expected, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(1.0 - l2 / 2.0, I, axis=1), D, atol=1e-4)
    # The same codes searched through 4 of 16 cells miss some of those neighbours.
    D_few, _ = search_index(opq_index, xq, 10)
    assert np.all(D_few <= D + 1e-4) and np.any(D_few < D - 1e-3)


def test_refine_over_opq_with_the_whole_database_shortlisted_is_exact_search(data):
    xb, xq = data
    k = 5
    refine_factor = -(-len(xb) // k)  # k * factor >= database size: every vector is re-ranked
    index = build_index(
        xb, "ivfpq", opq=True, nprobe=PQ["nlist"], refine_factor=refine_factor, **PQ
    )
    assert isinstance(index, faiss.IndexRefineFlat)
    assert inner_ivfpq(index).nprobe == PQ["nlist"]
    D, I = search_index(index, xq, k)
    D_ref, I_ref = reference_top_k(xq, xb, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)


def test_opq_lowers_quantization_error_and_recall_loss_where_variance_is_unbalanced(data):
    xb, xq = data
    plain = build_index(xb, "ivfpq", nprobe=PQ["nlist"], **PQ)
    rotated = build_index(xb, "ivfpq", opq=True, nprobe=PQ["nlist"], **PQ)
    assert isinstance(plain, faiss.IndexIVFPQ)  # opq=False keeps the plain index
    errors = [
        np.mean(np.sum((i.reconstruct_n(0, i.ntotal) - xb) ** 2, 1)) for i in (plain, rotated)
    ]
    assert errors[1] < 0.6 * errors[0], errors
    # And it finds more of the exact top-10.
    _, I_ref = reference_top_k(xq, xb, 10)
    found = [
        np.mean(
            [len(set(a) & set(b)) for a, b in zip(search_index(i, xq, 10)[1], I_ref, strict=True)]
        )
        for i in (plain, rotated)
    ]
    assert found[1] > found[0] + 0.5, found


def test_opq_config_round_trip_and_validation(data):
    config = as_index_config("ivfpq", opq=True, nprobe=8, m=8, nlist=None)
    assert config.opq is True and config.m == 8 and config.nprobe == 8 and config.nlist is None
    assert IndexConfig(**dataclasses.asdict(config)) == config
    assert as_index_config(config, nprobe=2).opq is True  # replacing a field keeps opq
    assert IndexConfig().opq is False and IndexConfig(kind="ivfpq").opq is False
    with pytest.raises(ValueError, match="applies to index='ivfpq' only"):
        IndexConfig(kind="hnsw", opq=True)
    # faiss's OPQ training corrupts memory with fewer rows than dimensions: a clear error instead.
    with pytest.raises(ValueError, match="OPQ needs at least D = 32 training descriptors"):
        build_index(data[0][:31], "ivfpq", opq=True, nlist=1, m=8, nbits=4)
    with pytest.raises(ValueError, match="Received: 20 "):
        build_index(data[0], "ivfpq", opq=True, max_train_points=20, **PQ)
    # A config object and keyword parameters build the same index (training is seeded).
    xb, xq = data
    by_config = search(xq, xb, 5, index=IndexConfig(kind="ivfpq", opq=True, nprobe=4, **PQ))
    by_keywords = search(xq, xb, 5, index="ivfpq", opq=True, nprobe=4, **PQ)
    np.testing.assert_array_equal(by_config[1], by_keywords[1])
    np.testing.assert_array_equal(by_config[0], by_keywords[0])


def test_inner_ivfpq_reaches_through_refine_and_rotation(data):
    xb = data[0]
    for params in ({}, {"opq": True}, {"refine_factor": 3}, {"opq": True, "refine_factor": 3}):
        index = build_index(xb, "ivfpq", nprobe=5, **PQ, **params)
        ivfpq = inner_ivfpq(index)
        assert isinstance(ivfpq, faiss.IndexIVFPQ) and ivfpq.nprobe == 5 and ivfpq.pq.M == 8
        ivfpq.nprobe = 7  # a view: the outer index searches with it
        assert faiss.extract_index_ivf(index).nprobe == 7
    with pytest.raises(ValueError, match="built with index='ivfpq'"):
        inner_ivfpq(build_index(xb[:50], "flat"))


@pytest.mark.slow
def test_evaluate_command_builds_an_opq_index(tiny_city, tmp_path, monkeypatch):
    from sare_tf.cli import main
    from sare_tf.models import build_embedding_model

    # 16-d descriptors (an unfitted, random PCA projection): OPQ needs >= D database images and
    # the tiny city's test split has 42.
    model = build_embedding_model("tiny", num_clusters=4, pca_dim=16, name="tiny16")

    search_module = importlib.import_module("sare_tf.index.faiss_search")
    recall_module = importlib.import_module("sare_tf.evaluation.recall")  # where evaluate builds
    built = []
    real_build_index = search_module.build_index

    def recording_build_index(xb, index="flat", **params):
        faiss_index = real_build_index(xb, index, **params)
        built.append(faiss_index)
        return faiss_index

    monkeypatch.setattr(recall_module, "build_index", recording_build_index)
    keras_path = tmp_path / "tiny16.keras"
    model.save(keras_path)
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(keras_path), "--dataset", tiny_city["test"],
            "--index-type", "ivfpq", "--opq", "--nlist", "2", "--pq-m", "4", "--nbits", "4",
            "--nprobe", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["index"] == "ivfpq"
    assert report["index_params"]["opq"] is True and report["index_params"]["m"] == 4
    (index,) = built
    assert isinstance(index, faiss.IndexPreTransform) and index.ntotal == 42
    assert rotation_of(index).shape == (16, 16)
    ivfpq = inner_ivfpq(index)
    assert (ivfpq.nlist, ivfpq.nprobe, ivfpq.pq.M, ivfpq.pq.nbits) == (2, 2, 4, 4)
    recalls = report["models"]["tiny16"]
    assert 0.0 <= recalls["recall@1"] <= recalls["recall@20"] <= 1.0
