"""Tokyo 24/7 panorama suppression and the TokyoTM time filter against plain-loop references."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.evaluation.protocols import (
    DifferentTimeFilter,
    PanoramaSuppression,
    panorama_ids_from_file_names,
    protocol_for_dataset,
    ranked_search,
)
from sare_tf.evaluation.recall import evaluate_retrieval
from sare_tf.index.faiss_search import build_index


def tokyo_names(num_panoramas, folder="03814"):
    """Tokyo 24/7 style cutout names: `<panorama>_<pitch 012>_<yaw 000..330>.png`."""
    return [
        f"{folder}/{381400 + p:07d}_Ab-c{p}_012_{yaw:03d}.png"
        for p in range(num_panoramas)
        for yaw in range(0, 360, 30)
    ]


def full_ranking(xq, xb):
    similarity = xq.astype(np.float64) @ xb.astype(np.float64).T
    ids = np.broadcast_to(np.arange(len(xb)), similarity.shape)
    return np.lexsort((ids, -similarity), axis=1)


def test_panorama_ids_from_tokyo_file_names():
    names = tokyo_names(3)
    ids = panorama_ids_from_file_names(names)
    assert ids.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    # The same panorama name in another folder is another panorama.
    other = panorama_ids_from_file_names(
        names[:12] + [n.replace("03814", "03815") for n in names[:12]]
    )
    assert other.tolist() == [0] * 12 + [1] * 12


def test_panorama_ids_reject_names_that_do_not_identify_panoramas():
    with pytest.raises(ValueError, match="does not match"):
        panorama_ids_from_file_names(["a/b.jpg", "a/c.jpg"])
    with pytest.raises(ValueError, match="No two database images share a panorama"):
        panorama_ids_from_file_names([f"x{i}_000.jpg" for i in range(5)])
    with pytest.raises(ValueError, match="more than cutouts_per_panorama"):
        panorama_ids_from_file_names(
            [f"pano_{i:03d}.jpg" for i in range(13)], cutouts_per_panorama=12
        )


def test_panorama_suppression_equals_reference_loop():
    rng = np.random.default_rng(0)
    num_panoramas = 30
    names = tokyo_names(num_panoramas)
    # Cutouts of one panorama look alike, so unsuppressed rankings are full of duplicates.
    centres = rng.normal(size=(num_panoramas, 16))
    xb = (np.repeat(centres, 12, axis=0) + 0.3 * rng.normal(size=(12 * num_panoramas, 16))).astype(
        np.float32
    )
    xq = (centres[rng.integers(0, num_panoramas, 25)] + 0.5 * rng.normal(size=(25, 16))).astype(
        np.float32
    )
    protocol = PanoramaSuppression.from_file_names(names)
    got = ranked_search(build_index(xb), xq, k=10, protocol=protocol)
    panorama = np.arange(len(names)) // 12
    for q, ranking in enumerate(full_ranking(xq, xb)):
        seen, expected = set(), []
        for db_id in ranking:
            if panorama[db_id] not in seen:
                seen.add(panorama[db_id])
                expected.append(db_id)
        assert got[q].tolist() == expected[:10]
    # Without suppression, the top 10 repeats panoramas.
    plain = ranked_search(build_index(xb), xq, k=10)
    assert any(len(set(panorama[row])) < 10 for row in plain)


def test_time_filter_equals_reference_and_searches_deeper_when_needed():
    rng = np.random.default_rng(1)
    xb = rng.normal(size=(300, 8)).astype(np.float32)
    xq = rng.normal(size=(20, 8)).astype(np.float32)
    db_times = rng.integers(0, 3, size=300)
    query_times = rng.integers(0, 3, size=20)
    # Query 0's 150 nearest database images share its time stamp: the first search
    # (k * 10 = 50 deep) cannot fill its ranking, so deeper searches must follow.
    nearest = full_ranking(xq[:1], xb)[0][:150]
    db_times[nearest] = query_times[0]
    protocol = DifferentTimeFilter(query_times, db_times)
    got = ranked_search(build_index(xb), xq, k=5, protocol=protocol)
    for q, ranking in enumerate(full_ranking(xq, xb)):
        expected = [db_id for db_id in ranking if db_times[db_id] != query_times[q]][:5]
        assert got[q].tolist() == expected
    assert set(got[0]).isdisjoint(nearest)


def test_filter_that_leaves_too_few_results_pads_with_minus_one():
    xb = np.eye(4, dtype=np.float32)
    protocol = DifferentTimeFilter([7], [7, 7, 1, 7])
    got = ranked_search(build_index(xb), xb[:1], k=3, protocol=protocol)
    assert got.tolist() == [[2, -1, -1]]


def test_recall_under_panorama_suppression_counts_distinct_panoramas():
    # Query at panorama 0's place; the 12 cutouts of panorama 1 (far away) look most similar,
    # then panorama 0. Plain Recall@5 misses; with suppression, rank 2 is panorama 0.
    names = tokyo_names(3)
    xb = np.zeros((36, 3), dtype=np.float32)
    xb[:12] = [0.8, 0.6, 0.0]
    xb[12:24] = [1.0, 0.0, 0.0]
    xb[24:] = [0.0, 0.0, 1.0]
    db_utm = np.repeat([[0.0, 0.0], [500.0, 0.0], [1000.0, 0.0]], 12, axis=0)
    xq = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    query_utm = np.array([[5.0, 0.0]])
    plain = evaluate_retrieval(xq, xb, query_utm, db_utm, ns=(1, 2, 5))
    suppressed = evaluate_retrieval(
        xq, xb, query_utm, db_utm, ns=(1, 2, 5), protocol=PanoramaSuppression.from_file_names(names)
    )
    assert plain.recalls == {1: 0.0, 2: 0.0, 5: 0.0}
    assert suppressed.recalls == {1: 0.0, 2: 1.0, 5: 1.0}


def test_protocol_for_dataset_auto_detection():
    def dataset(name, db_paths, **times):
        return GeoDataset(
            db_paths, np.zeros((len(db_paths), 2)), ["q.jpg"], [[0.0, 0.0]], name=name, **times
        )

    assert protocol_for_dataset(dataset("pitts30k_test", ["a.jpg"])) is None
    tokyo = protocol_for_dataset(dataset("tokyo247", tokyo_names(2)))
    assert isinstance(tokyo, PanoramaSuppression) and tokyo.name == "tokyo247"
    tm = protocol_for_dataset(
        dataset("tokyoTM_val", ["a.jpg", "b.jpg"], db_time_stamps=[1, 2], query_time_stamps=[1])
    )
    assert isinstance(tm, DifferentTimeFilter)
    assert protocol_for_dataset(dataset("tokyo247", tokyo_names(2)), "standard") is None
    with pytest.raises(ValueError, match="time stamps"):
        protocol_for_dataset(dataset("x", ["a.jpg"]), "tokyotm")
    with pytest.raises(ValueError, match="Unknown protocol"):
        protocol_for_dataset(dataset("x", ["a.jpg"]), "oxford")
