"""Today's models (torchvision ResNet + GeM) through every export: SavedModel, ONNX and LiteRT,
float and int8, against the Keras model on the same images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from sare_tf.artifacts import load_descriptor_model, model_fingerprint
from sare_tf.cli import main
from sare_tf.data import GeoDataset
from sare_tf.encoding import encode
from sare_tf.model import build_embedding_model

SIZE = (64, 96)


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_resnet18_gem_exports_agree_with_keras(tiny_city, tmp_path):
    model = build_embedding_model("resnet18", aggregator="gem", fc_dim=16)
    model.image_size = SIZE
    keras_path = tmp_path / "resnet18_gem.keras"
    model.save(keras_path)
    paths = GeoDataset.load(tiny_city["test"]).query_image_paths()[:12]
    reference, _ = encode(load_descriptor_model(keras_path), paths, progress=False)
    calibration = ["--calibration", tiny_city["train"], "--calibration-count", "16"]
    runs = {
        "saved_model": ["--format", "saved_model"],
        "onnx": ["--format", "onnx"],
        "onnx-int8": ["--format", "onnx", "--quantize", "int8", *calibration],
        "litert": ["--format", "litert"],
        "litert-int8": ["--format", "litert", "--quantize", "int8", *calibration],
    }
    cosines = {}
    for label, flags in runs.items():
        root = tmp_path / label
        assert main(["export", "--model", str(keras_path), "--name", "r18", "--root", str(root),
                     "--quiet", *flags]) == 0  # fmt: skip
        loaded = load_descriptor_model(root / "r18")
        got, _ = encode(loaded, paths, progress=False)
        cosines[label] = float(_cosines(got, reference).min())
        if "int8" not in label:
            np.testing.assert_allclose(got, reference, atol=1e-5)
            assert model_fingerprint(loaded) == model_fingerprint(load_descriptor_model(keras_path))
    # The stated int8 tolerance on this random ResNet-18 (AMD EPYC: ONNX 0.9992, LiteRT 0.9983;
    # `pytest -s` prints them): backbone int8, GeM and its projection float32.
    print("min cosine to Keras:", cosines)
    assert cosines["onnx-int8"] >= 0.99 and cosines["litert-int8"] >= 0.99
