"""`sare-tf compare` at tiny size: the comparison's table, JSON and figure from real runs."""

from __future__ import annotations

import json

import pytest
from PIL import Image


@pytest.mark.slow
def test_compare_trains_each_loss_from_one_initial_model(tiny_city, tmp_path, capsys):
    from sare_tf import cli

    out = tmp_path / "compare"
    argv = [
        "compare", "--losses", "sare-joint", "npair", "--test-dataset", tiny_city["test"],
        "--dataset", tiny_city["train"], "--backbone", "tiny", "--num-clusters", "4",
        "--image-size", "48", "64", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
        "--num-negatives", "2", "--num-candidates", "20", "--cluster-images", "8",
        "--precision", "float32", "--out", str(out), "--quiet", "--no-tensorboard",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    report = json.loads((out / "table6.json").read_text())
    assert [row["loss"] for row in report["rows"]] == ["sare-joint", "npair"]
    for row in report["rows"]:
        assert 0.0 <= row["recall@1"] <= row["recall@5"] <= row["recall@10"] <= 1.0
        summary = json.loads((out / row["loss"] / "summary.json").read_text())
        assert summary["config"]["loss"] == row["loss"]
        assert summary["config"]["initial_model"] == report["initial_model"]  # the same start
    table = (out / "table6.md").read_text()
    assert "| sare-joint |" in table and "| npair |" in table
    with Image.open(out / "fig8_recall_curves.png") as figure:
        assert figure.format == "PNG"
    assert len(report["recall_curves"]["npair"]) == 25
    with pytest.raises(ValueError, match="Unknown or no losses"):
        from sare_tf.training.comparison import compare_losses
        from sare_tf.training.config import TrainConfig

        compare_losses(TrainConfig(dataset=tiny_city["train"]), tiny_city["test"], losses=["x"])
