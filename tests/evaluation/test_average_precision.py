"""mAP against an independent implementation of the Oxford protocol, and the ground-truth readers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sare_tf.evaluation.average_precision import (
    average_precision,
    load_holidays,
    load_oxford_paris,
    mean_average_precision,
    read_oxford_paris_ground_truth,
)


def reference_ap(ranking, positives, junk):
    """The Oxford `compute_ap` procedure, step by step (running precision/recall, trapezoids)."""
    positives, junk = set(positives), set(junk)
    old_recall, old_precision, ap = 0.0, 1.0, 0.0
    found, position = 0, 0
    for db_id in ranking:
        if db_id in junk:
            continue
        if db_id in positives:
            found += 1
        recall = found / len(positives)
        precision = found / (position + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2.0
        old_recall, old_precision = recall, precision
        position += 1
    return ap


HAND_MADE = [
    # (ranking, positives, junk, hand-worked AP)
    ([0, 1, 2], [0], [], 1.0),
    ([1, 0, 2], [0], [], (0.0 + 0.5) / 2),  # p(0) = 0 then p(1) = 1/2: trapezoid
    ([0, 9, 1], [0, 1], [], (1.0 + (0.5 + 2 / 3) / 2) / 2),
    ([9, 0, 1], [0, 1], [9], 1.0),  # junk at the top is removed
    ([0, 9, 8, 1], [0, 1], [9], (1.0 + (0.5 + 2 / 3) / 2) / 2),  # junk in between shifts ranks
    ([5, 6, 7], [0, 1], [], 0.0),  # no positive retrieved
    ([0, 5, 6], [0, 1, 2, 3], [], 1.0 / 4),  # truncated: missing positives add nothing
]


@pytest.mark.parametrize("ranking,positives,junk,expected", HAND_MADE)
def test_average_precision_hand_worked(ranking, positives, junk, expected):
    assert average_precision(ranking, positives, junk) == pytest.approx(expected, abs=1e-12)
    assert reference_ap(ranking, positives, junk) == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_equals_reference_on_random_rankings_with_junk():
    rng = np.random.default_rng(0)
    num_db = 60
    rankings, positives, junk = [], [], []
    for _ in range(30):
        labels = rng.choice(3, size=num_db, p=[0.7, 0.2, 0.1])  # 0 negative, 1 positive, 2 junk
        labels[rng.integers(num_db)] = 1
        rankings.append(rng.permutation(num_db))
        positives.append(np.flatnonzero(labels == 1))
        junk.append(np.flatnonzero(labels == 2))
    mean_ap, aps = mean_average_precision(np.array(rankings), positives, junk)
    expected = [reference_ap(r, p, j) for r, p, j in zip(rankings, positives, junk, strict=True)]
    np.testing.assert_allclose(aps, expected, rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(np.mean(expected), abs=1e-12)
    # Junk matters: scoring junk as negatives gives a different (lower or equal) mAP.
    no_junk, _ = mean_average_precision(np.array(rankings), positives, None)
    assert no_junk < mean_ap


def test_average_precision_validation():
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision([0, 1], [])
    with pytest.raises(ValueError, match="One ranking"):
        mean_average_precision([[0, 1]], [[0], [1]])


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_oxford_ground_truth_reader_and_benchmark(tmp_path, caplog):
    gt = tmp_path / "gt"
    images = tmp_path / "jpg"
    for stem in ["all_souls_000001", "all_souls_000002", "all_souls_000003", "radcliffe_000001"]:
        write(str(images / f"{stem}.jpg"))
    write(str(gt / "all_souls_1_query.txt"), "oxc1_all_souls_000001 10.5 20 110.5 220\n")
    write(str(gt / "all_souls_1_good.txt"), "all_souls_000001\nall_souls_000002\n")
    write(str(gt / "all_souls_1_ok.txt"), "all_souls_000003\nmissing_image\n")
    write(str(gt / "all_souls_1_junk.txt"), "radcliffe_000001\n")
    queries = read_oxford_paris_ground_truth(gt)
    assert len(queries) == 1
    query = queries[0]
    assert (query.name, query.image, query.box) == (
        "all_souls_1",
        "all_souls_000001",
        (10.5, 20.0, 110.5, 220.0),
    )
    benchmark = load_oxford_paris(gt, images, name="oxford-mini")
    assert [os.path.basename(p) for p in benchmark.db_paths] == [
        "all_souls_000001.jpg",
        "all_souls_000002.jpg",
        "all_souls_000003.jpg",
        "radcliffe_000001.jpg",
    ]
    assert benchmark.positives[0].tolist() == [0, 1, 2]
    assert benchmark.junk[0].tolist() == [3]
    assert benchmark.query_boxes == [(10.5, 20.0, 110.5, 220.0)]
    assert "missing_image" in caplog.text
    assert load_oxford_paris(gt, images, crop_queries=False).query_boxes == [None]
    with pytest.raises(FileNotFoundError, match="_query.txt"):
        read_oxford_paris_ground_truth(images)


def test_holidays_reader(tmp_path):
    for stem in ["100000", "100001", "100002", "100100", "100101", "100200"]:
        write(str(tmp_path / f"{stem}.jpg"))
    benchmark = load_holidays(tmp_path)
    # Scene 1002 has only its query: skipped. Each query's own image is junk.
    assert benchmark.query_names == ["100000", "100100"]
    assert [p.tolist() for p in benchmark.positives] == [[1, 2], [4]]
    assert [j.tolist() for j in benchmark.junk] == [[0], [3]]
    # Ranking the query itself first does not hurt its AP (it is junk).
    mean_ap, _ = mean_average_precision(
        [[0, 1, 2, 3, 4, 5], [3, 5, 4, 0, 1, 2]], benchmark.positives, benchmark.junk
    )
    assert mean_ap == pytest.approx((1.0 + 0.5 * (0.0 + 0.5)) / 2)
