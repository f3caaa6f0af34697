"""evaluate_dataset / evaluate_benchmark glue: model -> descriptors -> search -> metrics."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.evaluation import (
    average_precision,
    evaluate_benchmark,
    evaluate_dataset,
    extract_descriptors,
    load_oxford_paris,
    run_dataset_evaluation,
)


def numpy_recall(query_desc, db_desc, query_utm, db_utm, ns, dist_thr=25.0):
    similarity = query_desc.astype(np.float64) @ db_desc.astype(np.float64).T
    order = np.lexsort(
        (np.broadcast_to(np.arange(len(db_desc)), similarity.shape), -similarity), axis=1
    )
    distance = np.linalg.norm(db_utm[order] - query_utm[:, None, :], axis=-1)
    return {f"recall@{n}": float(np.mean(np.any(distance[:, :n] <= dist_thr, axis=1))) for n in ns}


def test_evaluate_dataset_on_the_tiny_city(tiny_model, tiny_city):
    dataset = GeoDataset.from_dbstruct(tiny_city["test"])
    metrics = evaluate_dataset(tiny_model, dataset, image_size=(48, 64), progress=False)
    assert list(metrics) == ["recall@1", "recall@5", "recall@10", "recall@20"]
    db_desc = extract_descriptors(tiny_model, dataset.db_image_paths(), (48, 64), progress=False)
    query_desc = extract_descriptors(
        tiny_model, dataset.query_image_paths(), (48, 64), progress=False
    )
    expected = numpy_recall(query_desc, db_desc, dataset.query_utm, dataset.db_utm, (1, 5, 10, 20))
    assert metrics == expected
    assert all(0.0 <= value <= 1.0 for value in metrics.values())


@pytest.fixture()
def small_geo_dataset(tmp_path, jpeg_writer):
    """6 database and 3 query JPEGs; query 2's file is corrupt."""
    paths = []
    for i in range(6):
        jpeg_writer(tmp_path / f"db_{i}.jpg", 40, 48, seed=i)
        paths.append(f"db_{i}.jpg")
    jpeg_writer(tmp_path / "q_0.jpg", 40, 48, seed=0)  # same picture as db 0
    shutil.copy(tmp_path / "db_3.jpg", tmp_path / "q_1.jpg")  # same picture as db 3
    (tmp_path / "q_2.jpg").write_bytes(b"\xff\xd8 broken")
    db_utm = [[100.0 * i, 0.0] for i in range(6)]
    query_utm = [[0.0, 5.0], [300.0, 5.0], [500.0, 5.0]]
    return GeoDataset(
        paths,
        db_utm,
        ["q_0.jpg", "q_1.jpg", "q_2.jpg"],
        query_utm,
        image_root=str(tmp_path),
        name="mini",
    )


def test_unreadable_query_counts_as_failure(tiny_model, small_geo_dataset, caplog):
    with caplog.at_level(logging.WARNING, logger="sare_tf.evaluation"):
        evaluation = run_dataset_evaluation(
            tiny_model, small_geo_dataset, image_size=(32, 40), ns=(1, 5), progress=False
        )
    # Queries 0 and 1 are pictures of their own place: found first. Query 2 cannot be read.
    assert evaluation.metrics == {"recall@1": 2 / 3, "recall@5": 2 / 3}
    assert evaluation.query_valid.tolist() == [True, True, False]
    assert evaluation.result.num_invalid_queries == 1
    assert evaluation.protocol == "standard"
    assert "1 of 3 query images could not be read" in caplog.text
    assert evaluation.result.curve(6).shape == (6,)  # N up to the whole database


def test_tokyo247_protocol_is_picked_and_applied(tiny_model, tmp_path, jpeg_writer):
    # Two panoramas of 3 cutouts each, named the Tokyo 24/7 way.
    names = [f"03814/pano{p}_012_{yaw:03d}.jpg" for p in range(2) for yaw in (0, 30, 60)]
    (tmp_path / "03814").mkdir()
    for i, name in enumerate(names):
        jpeg_writer(tmp_path / name, 40, 48, seed=10 + i)
    shutil.copy(tmp_path / names[4], tmp_path / "query.jpg")
    dataset = GeoDataset(
        names,
        [[0.0, 0.0]] * 3 + [[200.0, 0.0]] * 3,
        ["query.jpg"],
        [[200.0, 3.0]],
        image_root=str(tmp_path),
        name="tokyo247",
    )
    evaluation = run_dataset_evaluation(tiny_model, dataset, ns=(1, 2), progress=False)
    assert evaluation.protocol == "tokyo247"
    assert evaluation.metrics == {"recall@1": 1.0, "recall@2": 1.0}


def test_evaluate_benchmark_map_equals_ranking_by_hand(tiny_model, tmp_path, jpeg_writer):
    gt, images = tmp_path / "gt", tmp_path / "jpg"
    gt.mkdir()
    images.mkdir()
    stems = [f"place_{i:06d}" for i in range(8)]
    for i, stem in enumerate(stems):
        jpeg_writer(images / f"{stem}.jpg", 48, 64, seed=20 + i)
    (gt / "place_1_query.txt").write_text("oxc1_place_000000 4 4 60 44\n")
    (gt / "place_1_good.txt").write_text("place_000000\nplace_000001\n")
    (gt / "place_1_ok.txt").write_text("place_000002\n")
    (gt / "place_1_junk.txt").write_text("place_000003\n")
    benchmark = load_oxford_paris(gt, images)
    result = evaluate_benchmark(tiny_model, benchmark, progress=False)
    db_desc = extract_descriptors(tiny_model, benchmark.db_paths, progress=False)
    query_desc = extract_descriptors(
        tiny_model, benchmark.query_paths, boxes=[(4, 4, 60, 44)], progress=False
    )
    ranking = np.argsort(-(db_desc @ query_desc[0]), kind="stable")
    assert result["map"] == pytest.approx(average_precision(ranking, [0, 1, 2], [3]), abs=1e-9)
    assert result["num_queries"] == 1 and result["num_db"] == 8
    assert list(result["aps"]) == ["place_1"]
