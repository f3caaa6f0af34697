"""`sare-tf demo --quick` end to end in a fresh process, twice (the city is reused, version 2 exported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image


def _demo(tmp_path, *extra):
    command = [
        sys.executable,
        "-m",
        "sare_tf",
        "demo",
        "--quick",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs" / "demo"),
        "--export-root",
        str(tmp_path / "saved_models"),
        *extra,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_reruns(tmp_path):
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    metrics = json.loads((tmp_path / "runs" / "demo" / "metrics.json").read_text())
    for stage in ("before", "after"):
        for key in ("recall@1", "recall@5", "recall@10"):
            assert 0.0 <= metrics[stage][key] <= 1.0
        assert (
            metrics[stage]["recall@1"] <= metrics[stage]["recall@5"] <= metrics[stage]["recall@10"]
        )
    assert metrics["seconds"] > 0
    assert "sare-tf demo finished" in first.stdout
    # The recipe and why, the CPU, and the stage timeline, each stage timed in metrics.json.
    assert "recipe: tiny backbone" in first.stdout and "precision:" in first.stdout
    assert set(metrics["timings"]) == {
        "city", "model", "before", "train", "after", "export", "plots", "metrics"
    }  # fmt: skip
    assert sum(metrics["timings"].values()) <= metrics["seconds"] + 1.0
    for stage in metrics["timings"]:
        assert f"\n{stage} " in first.stdout  # a line of the timeline
    assert metrics["training"]["collapse"] == []

    version_1 = tmp_path / "saved_models" / "sare_demo" / "1"
    assert (version_1 / "saved_model.pb").is_file()
    curve = tmp_path / "runs" / "demo" / "recall_curve.png"
    panels = sorted((tmp_path / "runs" / "demo" / "saliency").glob("*.png"))
    assert panels, "no saliency panel written"
    for png in (curve, *panels):
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 200
        assert png.stat().st_size > 5_000

    second = _demo(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "reused" in second.stderr  # the city module logs it
    assert (tmp_path / "saved_models" / "sare_demo" / "2" / "saved_model.pb").is_file()


def test_the_commands_offer_the_city_presets_the_generator_has():
    from sare_tf.synthetic.city import PRESETS
    from sare_tf.synthetic.settings import CITY_PRESETS

    assert set(CITY_PRESETS) == set(PRESETS)
