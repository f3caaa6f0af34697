"""GeoDataset: validation, ground truth against brute force, path safety."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.data import GeoDataset, check_relative_path


def _brute_force_positives(query_utm, db_utm, radius):
    """Plain double loop in float64: ids within radius, sorted by (distance, id)."""
    result = []
    for q in range(len(query_utm)):
        found = []
        for d in range(len(db_utm)):
            dist = np.sqrt(
                (query_utm[q][0] - db_utm[d][0]) ** 2 + (query_utm[q][1] - db_utm[d][1]) ** 2
            )
            if dist <= radius:
                found.append((dist, d))
        result.append([d for _, d in sorted(found)])
    return result


def _random_dataset(seed=0, num_db=400, num_queries=150, extent=300.0):
    rng = np.random.default_rng(seed)
    db_utm = rng.uniform(0, extent, size=(num_db, 2)) + [585000.0, 4477000.0]
    query_utm = rng.uniform(-30, extent + 30, size=(num_queries, 2)) + [585000.0, 4477000.0]
    return GeoDataset(
        db_paths=[f"db/{i:05d}.jpg" for i in range(num_db)],
        db_utm=db_utm,
        query_paths=[f"q/{i:05d}.jpg" for i in range(num_queries)],
        query_utm=query_utm,
        image_root="/data/city",
    )


@pytest.mark.parametrize("radius", [None, 10.0, 25.0, 47.5])
def test_positives_equal_brute_force(radius):
    ds = _random_dataset()
    expected = _brute_force_positives(ds.query_utm, ds.db_utm, 25.0 if radius is None else radius)
    got = ds.positives(radius)
    assert len(got) == ds.num_queries
    assert [g.tolist() for g in got] == expected
    assert sum(len(e) for e in expected) > ds.num_queries  # the check is not vacuous


def test_positives_boundary_inclusive_and_ties_by_id():
    # 3-4-5 triangles: distances exactly 10 and 25; two db images at the same place.
    ds = GeoDataset(
        ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
        [[6, 8], [15, 20], [15.0, 20.0], [0, 0], [100, 100]],
        ["q.jpg", "far.jpg"],
        [[0, 0], [-500, -500]],
    )
    assert ds.positives(25.0)[0].tolist() == [3, 0, 1, 2]
    assert ds.train_positives()[0].tolist() == [3, 0]
    assert ds.non_negatives()[0].tolist() == [3, 0, 1, 2]
    assert ds.positives(9.999)[0].tolist() == [3]
    assert ds.positives()[1].tolist() == []


def test_queries_without_positives_are_reported_and_excluded():
    ds = GeoDataset(
        ["a.jpg", "b.jpg"],
        [[0, 0], [50, 0]],
        ["q0.jpg", "q1.jpg", "q2.jpg"],
        [[1, 1], [30, 0], [49, 0]],  # q1 is 20 m from a and b: no training positive
        name="toy",
    )
    assert ds.valid_query_mask().tolist() == [True, False, True]
    assert ds.train_query_ids().tolist() == [0, 2]
    assert ds.queries_without_positives().tolist() == [1]
    assert "1 queries have no training positive (within 10 m)" in ds.summary()
    assert "(ids 1)" in ds.summary()


def test_absolute_paths_and_attributes():
    ds = _random_dataset(num_db=3, num_queries=2)
    assert ds.num_db == 3 and ds.num_queries == 2
    assert ds.db_image_paths()[1] == "/data/city/db/00001.jpg"
    assert ds.query_image_paths()[0] == "/data/city/q/00000.jpg"
    assert ds.db_utm.dtype == np.float64 and ds.db_utm.shape == (3, 2)
    with pytest.raises(ValueError):
        ds.db_utm[0, 0] = 1.0  # read-only: the cached ground truth cannot go stale


@pytest.mark.parametrize(
    "bad, message",
    [
        ("../outside.jpg", "escapes the image root"),
        ("db/../../outside.jpg", "escapes the image root"),
        ("/etc/passwd", "Absolute"),
        ("C:\\images\\a.jpg", "Absolute"),
        ("", "Empty"),
    ],
)
def test_path_escaping_the_root_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        GeoDataset([bad], [[0, 0]], ["q.jpg"], [[0, 0]])


def test_safe_relative_paths_are_normalised():
    assert check_relative_path("db/./x/../a.jpg") == "db/a.jpg"
    assert check_relative_path("db\\a.jpg") == "db/a.jpg"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(db_utm=[[0, 0, 0]]), r"db_utm.*\[N, 2\]"),
        (dict(db_utm=[[0, 0], [1, 1]]), "2 rows but there are 1 image paths"),
        (dict(query_utm=[[np.nan, 0]]), "non-finite"),
        (dict(pos_dist_thr=-1.0), "pos_dist_thr"),
        (dict(nontriv_pos_dist_thr=30.0), "nontriv_pos_dist_thr"),
        (dict(db_time_stamps=[1, 2]), "db_time_stamps"),
    ],
)
def test_validation_errors_name_the_value(kwargs, message):
    args = dict(db_paths=["a.jpg"], db_utm=[[0, 0]], query_paths=["q.jpg"], query_utm=[[0, 0]])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        GeoDataset(**args)


def test_subset_keeps_positions_and_thresholds():
    ds = _random_dataset(num_db=20, num_queries=10)
    sub = ds.subset(query_ids=[3, 7], db_ids=[0, 5, 9], name="sub")
    np.testing.assert_array_equal(sub.query_utm, ds.query_utm[[3, 7]])
    np.testing.assert_array_equal(sub.db_utm, ds.db_utm[[0, 5, 9]])
    assert sub.db_paths == [ds.db_paths[i] for i in (0, 5, 9)]
    assert sub.name == "sub" and sub.pos_dist_thr == ds.pos_dist_thr
