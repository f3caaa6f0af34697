"""ONNX exports (float and int8) run by ONNX Runtime against the Keras model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from sare_tf.artifacts import load_descriptor_model, model_fingerprint
from sare_tf.cli import main
from sare_tf.encoding import encode


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_float_and_int8_onnx_exports_round_trip(tiny_model, tiny_city, tmp_path, capsys):
    from sare_tf.artifacts import store_image_size

    store_image_size(tiny_model, (48, 64))
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    root = tmp_path / "onnx"
    base = [
        "export",
        "--model",
        str(keras_path),
        "--name",
        "tiny",
        "--root",
        str(root),
        "--format",
        "onnx",
    ]
    assert main(base) == 0
    assert main([*base, "--quantize", "int8", "--calibration", tiny_city["train"],
                 "--calibration-count", "16"]) == 0  # fmt: skip
    assert sorted(os.listdir(root / "tiny")) == ["1", "2"]  # versioned, nothing left staged
    info = json.loads((root / "tiny" / "2" / "export_info.json").read_text())
    assert info["quantize"] == "int8" and info["calibration"]["images"] == 16
    assert info["quantized_convolutions"] > 0 and info["float_nodes"] > 0
    from sare_tf.data import GeoDataset

    paths = GeoDataset.load(tiny_city["test"]).query_image_paths()
    reference, _ = encode(load_descriptor_model(keras_path), paths, progress=False)
    float_model = load_descriptor_model(root / "tiny" / "1")
    assert float_model.kind == "onnx" and float_model.image_size == (48, 64)
    got, _ = encode(float_model, paths, progress=False)
    assert _cosines(got, reference).min() >= 0.99999
    int8_model = load_descriptor_model(root / "tiny")  # the base path: the newest version
    assert int8_model.precision == "int8 (onnx)"
    quantized, _ = encode(int8_model, paths, progress=False)
    assert _cosines(quantized, reference).min() >= 0.98  # the stated int8 tolerance (tiny model)
    assert model_fingerprint(float_model) == model_fingerprint(load_descriptor_model(keras_path))
    assert model_fingerprint(int8_model).endswith(":int8")
    with pytest.raises(ValueError, match=r"shape \[batch, height, width, 3\]"):
        float_model.model(np.zeros((2, 48, 64), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        float_model.model(np.zeros((1, 48, 64, 3), np.int64))
    assert main([*base, "--quantize", "int8"]) != 0
    assert "needs calibration images" in capsys.readouterr().err
    assert sorted(os.listdir(root / "tiny")) == ["1", "2"]
    assert main(["evaluate", "--model", str(root / "tiny" / "1"), "--dataset", tiny_city["test"],
                 "--quiet", "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["models"]["tiny/1"]["kind"] == "onnx"
    evaluate = ["evaluate", "--model", str(root / "tiny" / "1"), "--dataset", tiny_city["test"],
                "--quiet", "--out", str(tmp_path / "eval2")]  # fmt: skip
    assert main([*evaluate, "--runtime", "onnx"]) == 0
    capsys.readouterr()
    assert main([*evaluate, "--runtime", "tf"]) != 0
    assert "not tf artefacts" in capsys.readouterr().err
