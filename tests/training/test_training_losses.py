"""`sare-tf train --loss X` trains a step on the tiny city for the paper's Sec. 7.6 objectives."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.parametrize("loss", ["npair", "angular", "lifted"])
def test_cli_train_a_step_with_each_comparison_loss(tiny_city, tmp_path, loss):
    from sare_tf import cli

    out = tmp_path / loss
    argv = [
        "train", "--dataset", tiny_city["train"], "--backbone", "tiny", "--num-clusters", "4",
        "--image-size", "48", "64", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
        "--num-negatives", "2", "--num-candidates", "20", "--cluster-images", "8", "--lr", "0.01",
        "--loss", loss, "--precision", "float32", "--out", str(out), "--quiet", "--no-tensorboard",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["loss"] == loss
    losses = [epoch["loss"] for epoch in summary["epochs"]]
    assert len(losses) == 1 and np.all(np.isfinite(losses)) and losses[0] > 0
