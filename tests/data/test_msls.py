"""MSLS: small cities written in the released schema (the MSLS authors' headers), real JPEGs."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.data.msls import read_msls

SUBTASK_COLUMNS = ["", "key", "all", "s2w", "w2s", "o2n", "n2o", "d2n", "n2d"]


def write_msls_role(folder, rows, jpeg_writer=None):
    """rows: dicts with key, east, north, pano, night, view, in_all (subtask 'all')."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    tables = {
        "seq_info.csv": [["", "key", "sequence_key", "frame_number"]],
        "raw.csv": [["", "key", "lon", "lat", "ca", "captured_at", "pano"]],
        "postprocessed.csv": [["", "key", "easting", "northing", "unique_cluster",
                               "control_panel", "night", "view_direction"]],  # fmt: skip
        "subtask_index.csv": [SUBTASK_COLUMNS],
    }
    for i, row in enumerate(rows):
        key = row["key"]
        tables["seq_info.csv"].append([i, key, "seqA", i])
        tables["raw.csv"].append([i, key, 12.5, 55.6, 90.0, 1500000000000, row.get("pano", False)])
        tables["postprocessed.csv"].append([i, key, row["east"], row["north"], 0, 0,
                                            row.get("night", False), row.get("view", "Forward")])  # fmt: skip
        flag = row.get("in_all", True)
        tables["subtask_index.csv"].append([i, key, flag, False, False, False, False, flag and row.get("night", False), False])
        if jpeg_writer is not None:
            jpeg_writer(os.path.join(folder, "images", f"{key}.jpg"), 48, 64, seed=i)
    for name, table in tables.items():
        with open(os.path.join(folder, name), "w", newline="") as handle:
            csv.writer(handle).writerows(table)


def _city(root, city, offset=0.0, jpeg_writer=None):
    base = os.path.join(root, "train_val", city)
    database = [{"key": f"{city}_db{i}", "east": 500000.0 + offset + 20 * i, "north": 6000000.0,
                 "pano": i == 5} for i in range(6)]  # fmt: skip
    queries = [
        {"key": f"{city}_q0", "east": 500001.0 + offset, "north": 6000000.0},
        {"key": f"{city}_q1", "east": 500041.0 + offset, "north": 6000000.0, "night": True, "view": "Sideways"},
        {"key": f"{city}_q2", "east": 500081.0 + offset, "north": 6000000.0, "in_all": False},
        {"key": f"{city}_q3", "east": 500061.0 + offset, "north": 6000000.0, "pano": True},
    ]  # fmt: skip
    write_msls_role(os.path.join(base, "database"), database, jpeg_writer)
    write_msls_role(os.path.join(base, "query"), queries, jpeg_writer)


@pytest.fixture
def msls_root(tmp_path):
    for city in ("cph", "sf", "trondheim"):
        _city(tmp_path, city)  # the same easting / northing in every city: zones overlap
    return tmp_path


def test_msls_val_subset_panoramas_cities_and_conditions(msls_root):
    ds = read_msls(msls_root, "val")
    # q2 is outside subtask 'all', q3 is a panorama, db5 is a panorama: 2 queries, 5 db per city
    assert ds.num_queries == 4 and ds.num_db == 10
    assert ds.query_paths[0] == "train_val/cph/query/images/cph_q0.jpg"
    assert ds.query_attributes["city"].tolist() == ["cph", "cph", "sf", "sf"]
    assert ds.query_attributes["night"].tolist() == ["day", "night", "day", "night"]
    assert ds.query_attributes["view_direction"].tolist() == ["forward", "sideways"] * 2
    # Overlapping UTM numbers of two cities never make cross-city positives.
    assert [p.tolist() for p in ds.positives(25.0)] == [[0, 1], [2, 3, 1], [5, 6], [7, 8, 6]]
    every = read_msls(msls_root, "val", subtask=None)
    assert every.num_queries == 6  # all non-panorama queries
    train = read_msls(msls_root, "trondheim")
    assert train.num_queries == 3  # no subtask filter outside val; the panorama still out
    assert GeoDataset.load(f"{msls_root}:cph").num_queries == 2
    assert GeoDataset.load(msls_root).name == "msls_val_all"


def test_msls_bad_inputs_name_file_row_and_field(msls_root):
    folder = msls_root / "train_val" / "cph" / "query"
    original = (folder / "postprocessed.csv").read_text()
    cases = [
        (original.replace("easting", "east"), r"postprocessed.csv:1: header"),
        (original.replace("500041.0", "nan", 1), r"postprocessed.csv:3: non-finite"),
        (original.replace("500041.0", "x", 1), r"postprocessed.csv:3: easting / northing must be numbers"),
        (original.replace("cph_q1", "cph_qX", 1), r"row 3 names different images"),
    ]  # fmt: skip
    for text, message in cases:
        (folder / "postprocessed.csv").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_msls(msls_root, "cph")
    (folder / "postprocessed.csv").write_text(original)
    for name in ("seq_info.csv", "raw.csv", "postprocessed.csv", "subtask_index.csv"):
        path = folder / name
        path.write_text(path.read_text().replace("cph_q1", "cph_q0"))
    with pytest.raises(ValueError, match="image key 'cph_q0' on rows 2 and 3"):
        read_msls(msls_root, "cph")
    with pytest.raises(ValueError, match="test city 'miami' has no public positions"):
        read_msls(msls_root, "miami")
    with pytest.raises(FileNotFoundError, match="train_val/london"):
        read_msls(msls_root, "london")
    empty = msls_root / "train_val" / "sf" / "query"
    write_msls_role(empty, [{"key": "p", "east": 1.0, "north": 2.0, "pano": True}])
    with pytest.raises(ValueError, match="sf/query: no query images left"):
        read_msls(msls_root, "sf")


def test_evaluate_prints_recall_per_condition(tmp_path, tiny_model, jpeg_writer, capsys):
    import json

    from sare_tf.cli import main

    for city in ("cph", "sf"):
        _city(tmp_path / "msls", city, jpeg_writer=jpeg_writer)
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    argv = ["evaluate", "--model", str(keras_path), "--dataset", f"{tmp_path / 'msls'}:val",
            "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Recall@N per query condition" in out and "night=night" in out and "city=sf" in out
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    breakdown = report["models"]["tiny"]["by_condition"]
    assert breakdown["night"]["night"]["num_queries"] == 2
    overall = report["models"]["tiny"]["recall@1"]
    per_city = [breakdown["city"][c]["recall@1"] for c in ("cph", "sf")]
    assert overall == pytest.approx(np.mean(per_city))  # two queries per city


def test_check_data_counts_queries_per_city_and_condition(msls_root, capsys):
    from sare_tf import cli

    assert cli.main(["check-data", f"{msls_root}:val", "--skip-images"]) == 0
    out = capsys.readouterr().out
    assert "queries by city: cph 2, sf 2" in out and "queries by night: day 2, night 2" in out
