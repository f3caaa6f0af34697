"""GSV-Cities: dataframes in the released schema, images named as its loader names them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.data.gsv_cities import image_name, read_gsv_cities

HEADER = "place_id,year,month,northdeg,city_id,lat,lon,panoid"


def _write_city(root, city, rows, index_column=False):
    os.makedirs(root / "Dataframes", exist_ok=True)
    lines = [("," if index_column else "") + HEADER]
    for i, row in enumerate(rows):
        lines.append((f"{i}," if index_column else "") + ",".join(str(v) for v in row))
    (root / "Dataframes" / f"{city}.csv").write_text("\n".join(lines) + "\n")
    os.makedirs(root / "Images" / city, exist_ok=True)


def _rows():
    # place 7: 4 images of one spot (years 2012..2021); place 9: 5 images 40 m north; place 11: 2.
    rows = [[7, year, 6, 90, "London", 51.5007, -0.1246, f"p7{year}"] for year in (2012, 2016, 2021, 2019)]
    rows += [[9, 2010 + k, 3, 180, "London", 51.50106, -0.1246, f"p9{k}"] for k in range(5)]
    rows += [[11, 2015, 1, 0, "London", 51.51, -0.13, "p11a"], [11, 2016, 1, 0, "London", 51.51, -0.13, "p11b"]]
    return rows


def test_places_labels_and_the_most_recent_image_as_query(tmp_path):
    _write_city(tmp_path, "London", _rows(), index_column=True)
    ds = GeoDataset.load(tmp_path)
    assert ds.num_queries == 2 and ds.num_db == 7  # place 11 (2 images) left out
    assert ds.train_by_labels and "2 images of places with fewer than 4" in ds.frame
    assert ds.query_labels.tolist() == ["London:7", "London:9"]
    first = {"place_id": 7, "year": 2021, "month": 6, "northdeg": 90, "city_id": "London",
             "lat": 51.5007, "lon": -0.1246, "panoid": "p72021"}  # fmt: skip
    assert ds.query_paths[0] == f"Images/London/{image_name(first)}"
    assert image_name(first) == "London_0000007_2021_06_090_51.5007_-0.1246_p72021.jpg"
    positives = ds.train_positives()
    assert [ds.db_labels[p].tolist() for p in positives] == [["London:7"] * 3, ["London:9"] * 4]
    # The places are 40 m apart: never negatives of each other only by label, not by distance.
    non_negatives = ds.non_negatives()
    assert set(non_negatives[0].tolist()) == set(positives[0].tolist())
    assert ds.positives(50.0)[0].size == 7  # both places within 50 m of the query
    assert "positives the same place label (training)" in ds.summary()


def test_bad_rows_are_refused_with_file_line_and_field(tmp_path):
    cases = {
        "year": ([[7, "20x", 6, 90, "London", 51.5, -0.12, "a"]], r"London.csv:2: year must be an integer"),
        "lat": ([[7, 2020, 6, 90, "London", 95.0, -0.12, "a"]] * 1, r"London.csv:2: latitude 95"),
        "lon": ([[7, 2020, 6, 90, "London", 51.5, "abc", "a"]], r"London.csv:2: lon must be a number"),
        "duplicate": ([[7, 2020, 6, 90, "London", 51.5, -0.12, "a"]] * 2, r"London.csv:3: the image .* listed again"),
    }  # fmt: skip
    for name, (rows, message) in cases.items():
        root = tmp_path / name
        _write_city(root, "London", rows)
        with pytest.raises(ValueError, match=message):
            read_gsv_cities(root)
    root = tmp_path / "columns"
    _write_city(root, "London", [])
    (root / "Dataframes" / "London.csv").write_text("place_id,year,lat,lon\n1,2020,51.5,-0.1\n")
    with pytest.raises(ValueError, match=r"London.csv:1: no column \['month', 'northdeg', 'city_id', 'panoid'\]"):
        read_gsv_cities(root)
    with pytest.raises(FileNotFoundError, match="Paris.csv"):
        read_gsv_cities(tmp_path / "year", cities=["Paris"])
    root = tmp_path / "small"
    _write_city(root, "London", _rows()[-2:])
    with pytest.raises(ValueError, match="no place has 4 or more images"):
        read_gsv_cities(root)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["msls", "gsv-cities"])
def test_train_a_tiny_epoch_on_the_synthetic_city_in_another_layout(tmp_path, layout, capsys):
    from sare_tf import cli

    assert cli.main(["make-synthetic", str(tmp_path / "city"), "--preset", "tiny", "--layout", layout]) == 0
    printed = capsys.readouterr().out
    if layout == "msls":
        root = tmp_path / "city" / "msls"
        train, val = f"{root}:trondheim", f"{root}:cph"
        assert GeoDataset.load(val).query_attributes["night"].tolist().count("night") >= 1
    else:
        root = tmp_path / "city" / "gsv_cities"
        train, val = str(root), None
        assert GeoDataset.load(train).num_queries >= 4
    assert str(root) in printed
    argv = ["train", "--dataset", train, "--backbone", "tiny", "--num-clusters", "4",
            "--image-size", "48", "64", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
            "--num-negatives", "2", "--num-candidates", "20", "--cluster-images", "8",
            "--precision", "float32", "--out", str(tmp_path / "run"), "--quiet", "--no-tensorboard"]  # fmt: skip
    if val:
        argv += ["--val-dataset", val]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and np.isfinite(summary["epochs"][0]["loss"])
