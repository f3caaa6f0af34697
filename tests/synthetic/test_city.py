"""The synthetic city: determinism, layout, and that it is a place-recognition problem."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image

from sare_tf.data import GeoDataset
from sare_tf.synthetic.city import city_config, make_synthetic_city

SMALL = dict(streets=(1, 1, 1), street_length_m=30.0, queries_per_street=4, image_size=(48, 64))


def _all_files(root):
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(found)


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float64)


def test_same_seed_gives_identical_files(tmp_path):
    first = make_synthetic_city(tmp_path / "a", seed=3, **SMALL)
    make_synthetic_city(tmp_path / "b", seed=3, **SMALL)
    make_synthetic_city(tmp_path / "c", seed=4, **SMALL)
    files = _all_files(tmp_path / "a")
    assert files == _all_files(tmp_path / "b") == _all_files(tmp_path / "c")
    assert sum(f.endswith(".jpg") for f in files) == 3 * (2 * 7 + 4)  # 7 positions x 2 sides + 4 q
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(files)
    _, different, _ = filecmp.cmpfiles(tmp_path / "a", tmp_path / "c", files, shallow=False)
    assert sum(f.endswith(".jpg") for f in different) == sum(f.endswith(".jpg") for f in files)
    assert set(first) == {"train", "val", "test"}


def test_existing_city_is_reused_unless_settings_change(tmp_path):
    mats = make_synthetic_city(tmp_path, seed=1, **SMALL)
    stamp = os.path.getmtime(mats["train"])
    os.utime(mats["train"], (stamp - 100, stamp - 100))
    make_synthetic_city(tmp_path, seed=1, **SMALL)
    assert os.path.getmtime(mats["train"]) == stamp - 100  # reused
    make_synthetic_city(tmp_path, seed=2, **SMALL)
    assert os.path.getmtime(mats["train"]) > stamp - 100  # regenerated
    assert json.loads((tmp_path / "city.json").read_text())["seed"] == 2


def test_tiny_city_layout(tiny_city):
    config = city_config("tiny")
    expected = config.num_images()
    seen_utm = {}
    for split in ("train", "val", "test"):
        ds = GeoDataset.from_dbstruct(tiny_city[split])
        assert ds.image_root == tiny_city["root"]
        assert (ds.num_db, ds.num_queries) == expected[split]
        assert ds.name == f"synthcity_{split}"
        for path in ds.db_image_paths()[:3] + ds.query_image_paths()[:3]:
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.mode == "RGB"
                assert image.size == (config.image_size[1], config.image_size[0])
        assert ds.valid_query_mask().all()  # every query has a training positive
        seen_utm[split] = np.concatenate([ds.db_utm, ds.query_utm])
    # Disjoint districts: every pair of splits is kilometres apart.
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        gaps = np.linalg.norm(seen_utm[a][:, None] - seen_utm[b][None], axis=-1)
        assert gaps.min() > 1000


def test_nearby_views_are_more_similar_than_far_ones(tiny_city):
    ds = GeoDataset.from_dbstruct(tiny_city["train"])
    gray = np.stack([_pixels(p).mean(-1) for p in ds.db_image_paths()])
    names = [os.path.basename(p) for p in ds.db_paths]
    near, far = [], []
    for i, name in enumerate(names):
        for j in range(i + 1, len(names)):
            same_view = names[j][:3] == name[:3] and names[j][-5] == name[-5]  # street, side
            distance = np.linalg.norm(ds.db_utm[i] - ds.db_utm[j])
            mad = np.abs(gray[i] - gray[j]).mean()
            if same_view and distance <= 5.0:
                near.append(mad)
            elif distance >= 40.0:
                far.append(mad)
    assert len(near) > 20 and len(far) > 100
    assert np.mean(near) < 0.85 * np.mean(far)


def test_queries_differ_from_their_nearest_database_image(tiny_city):
    ds = GeoDataset.from_dbstruct(tiny_city["train"])
    db = [_pixels(p) for p in ds.db_image_paths()]
    colour_shift, best_mad = [], []
    for q, positives in enumerate(ds.positives(ds.nontriv_pos_dist_thr)):
        query = _pixels(ds.query_image_paths()[q])
        best_mad.append(min(np.abs(query - db[j]).mean() for j in positives))
        nearest = db[positives[0]]
        colour_shift.append(np.abs(query.mean((0, 1)) - nearest.mean((0, 1))).mean())
    # Neighbouring database images (same day): their mean colours differ much less.
    db_shift = [np.abs(db[i].mean((0, 1)) - db[i + 2].mean((0, 1))).mean() for i in range(0, 40, 2)]
    assert min(best_mad) > 8.0  # no query is a copy of a database image
    assert np.mean(colour_shift) > 2.0 * np.mean(db_shift)


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown preset"):
        city_config("huge")
    with pytest.raises(ValueError, match="Unknown synthetic city setting"):
        city_config("tiny", colour="red")
    with pytest.raises(ValueError, match="streets"):
        city_config("tiny", streets=(1, 0, 1))
    assert city_config("demo", image_size=[96, 128]).image_size == (96, 128)
    with pytest.raises(ValueError, match="queries_per_street"):
        city_config("tiny", queries_per_street=(3, 0, 3))
    demo = city_config("demo")
    assert demo.num_images() == {"train": (612, 300), "val": (204, 100), "test": (204, 200)}


def test_make_synthetic_command(tmp_path, capsys):
    from sare_tf.cli import main

    out = tmp_path / "city"
    args = ["make-synthetic", str(out), "--preset", "tiny", "--streets", "1", "1", "1"]
    assert main(args + ["--image-size", "32", "48", "--queries-per-street", "3", "2", "5"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the city module logs its summary (stderr)
    assert "train 42 db + 3 queries" in printed and str(out / "synthcity_test.mat") in printed
    assert "test 42 db + 5 queries" in printed
    ds = GeoDataset.from_dbstruct(out / "synthcity_val.mat")
    assert (ds.num_db, ds.num_queries) == (42, 2)
    with Image.open(ds.query_image_paths()[0]) as image:
        assert image.size == (48, 32)
    info = json.loads((out / "synthcity_val_queries.json").read_text())
    assert [q["path"] for q in info] == ds.query_paths
    assert main(["make-synthetic", str(out), "--image-size", "8", "8"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_training_positives_show_the_same_facade(tiny_city):
    ds = GeoDataset.from_dbstruct(tiny_city["train"])
    info = json.loads(open(os.path.join(tiny_city["root"], "synthcity_train_queries.json")).read())
    db_side = [p[-5] for p in ds.db_paths]  # ..._N.jpg / ..._S.jpg
    for q, positives in enumerate(ds.train_positives()):
        assert positives.size > 0
        assert {db_side[i] for i in positives} == {info[q]["side"]}
    # Both sides do count within the 25 m evaluation radius, as in Pittsburgh.
    assert any({db_side[i] for i in p} == {"N", "S"} for p in ds.non_negatives())
