"""`sare-tf saliency` end to end on the tiny synthetic city (.mat dbStruct, JPEG files)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sare_tf import cli
from sare_tf.data import GeoDataset
from sare_tf.export import export_saved_model


@pytest.fixture(scope="module")
def saved_models(tiny_model, tmp_path_factory):
    """The tiny model as a .keras file and as an exported SavedModel."""
    folder = tmp_path_factory.mktemp("models")
    keras_path = os.fspath(folder / "sare_tiny.keras")
    tiny_model.save(keras_path)
    savedmodel = os.fspath(folder / "served" / "1")
    export_saved_model(tiny_model, savedmodel, image_size=(60, 80))
    return keras_path, savedmodel


@pytest.mark.slow
def test_command_writes_one_panel_per_query_with_the_25_m_verdict(
    saved_models, tiny_city, tmp_path, capsys
):
    keras_path, savedmodel = saved_models
    out = tmp_path / "panels"
    status = cli.main(
        [
            "saliency",
            "--model", keras_path,
            "--compare-model", savedmodel,
            "--dataset", tiny_city["test"],
            "--queries", "0,3",
            "--method", "smoothgrad",
            "--smooth-samples", "2",
            "--out", os.fspath(out),
        ]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "query 0: sare_tiny: top-1 db" in printed and "served/1: top-1 db" in printed
    summary = json.loads((out / "panels.json").read_text())
    dataset = GeoDataset.load(tiny_city["test"])
    assert [panel["query_id"] for panel in summary["panels"]] == [0, 3]
    for panel in summary["panels"]:
        assert (out / panel["path"]).is_file()
        assert Image.open(out / panel["path"]).format == "PNG"
        rows = panel["rows"]
        assert [row["model_name"] for row in rows] == ["sare_tiny", "served/1"]
        # The SavedModel serves the same weights: same retrieval.
        assert rows[0]["top1_db_id"] == rows[1]["top1_db_id"]
        for row in rows:
            query_xy = dataset.query_utm[panel["query_id"]]
            db_xy = dataset.db_utm[row["top1_db_id"]]
            distance = float(np.hypot(*(query_xy - db_xy)))
            assert row["distance_m"] == pytest.approx(distance)
            assert row["correct"] == (distance <= 25.0)


def test_command_explains_why_a_savedmodel_cannot_do_gradcam(
    saved_models, tiny_city, tmp_path, capsys
):
    status = cli.main(
        [
            "saliency",
            "--model", saved_models[1],
            "--dataset", tiny_city["test"],
            "--random", "1",
            "--method", "gradcam++",
            "--out", os.fspath(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert status == 2
    error = capsys.readouterr().err
    assert "method='gradcam++' needs the feature map" in error and "SavedModel" in error
    assert "Traceback" not in error


def test_query_choice(capsys):
    from sare_tf.saliency.settings import choose_queries

    assert choose_queries(10, queries=[4, 2]) == [4, 2]
    picked = choose_queries(10, random_count=3, seed=5)
    assert len(set(picked)) == 3 and all(0 <= i < 10 for i in picked)
    assert picked == choose_queries(10, random_count=3, seed=5)
    assert choose_queries(2, random_count=8) == [0, 1]
    assert cli.main(["saliency", "--model", "m", "--dataset", "d", "--out", "o",
                     "--queries", "1", "--random", "2"]) == 2  # fmt: skip
    assert "--queries and --random both choose the queries; give one" in capsys.readouterr().err


def test_command_scorecam_options_reach_the_maps(saved_models, tiny_city, tmp_path, monkeypatch):
    import sare_tf.saliency.panels as panels

    seen = []
    original = panels.saliency_maps

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(panels, "saliency_maps", recording)
    status = cli.main(
        [
            "saliency",
            "--model", saved_models[0],
            "--dataset", tiny_city["test"],
            "--queries", "1",
            "--method", "scorecam",
            "--scorecam-channels", "4",
            "--scorecam-temperature", "0.5",
            "--layer", "block3_conv2",
            "--out", os.fspath(tmp_path),
        ]
    )  # fmt: skip
    assert status == 0 and (tmp_path / "query_00001.png").is_file()
    assert len(seen) == 2  # the query against its top-1, the top-1 against the query
    for kwargs in seen:
        assert kwargs["method"] == "scorecam" and kwargs["layer_name"] == "block3_conv2"
        assert kwargs["scorecam_max_channels"] == 4 and kwargs["scorecam_temperature"] == 0.5
