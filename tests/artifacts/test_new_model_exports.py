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

# The stated int8 tolerances (minimum cosine to Keras, ONNX and LiteRT), on these random models;
# measured on AMD EPYC (8 calibration images): ResNet-18 + GeM 0.9995 / 0.9992, DINOv2 ViT-S +
# BoQ 0.9999 / 0.9825 (LiteRT quantizes the transformer's matmuls too). The ViT's int8 exports
# (calibrating a 12-block transformer takes minutes here) are left out of the suite (None): the
# float exports are checked; measure int8 with `sare-tf export` and `scripts/compare_runtimes.py`.
MODELS = [
    ("resnet18", "gem", 16, (64, 96), (0.99, 0.99)),
    ("dinov2-vits14", "boq", None, (70, 98), (None, None)),
    ("tiny", "crn-netvlad", None, (64, 96), (None, None)),  # the CRN graph's ops convert too
]


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, aggregator, fc_dim, size, int8_cosines",
    MODELS,
    ids=[f"{b}-{a}" for b, a, *_ in MODELS],
)
def test_new_models_exports_agree_with_keras(
    tiny_city, tmp_path, backbone, aggregator, fc_dim, size, int8_cosines
):
    model = build_embedding_model(backbone, num_clusters=4, aggregator=aggregator, fc_dim=fc_dim)
    model.image_size = size
    keras_path = tmp_path / "model.keras"
    model.save(keras_path)
    paths = GeoDataset.load(tiny_city["test"]).query_image_paths()[:6]
    reference, _ = encode(load_descriptor_model(keras_path), paths, progress=False)
    calibration = ["--calibration", tiny_city["train"], "--calibration-count", "8"]
    runs = {
        "saved_model": ["--format", "saved_model"],
        "onnx": ["--format", "onnx"],
        "onnx-int8": ["--format", "onnx", "--quantize", "int8", *calibration],
        "litert": ["--format", "litert"],
        "litert-int8": ["--format", "litert", "--quantize", "int8", *calibration],
    }
    for label, tolerance in zip(("onnx-int8", "litert-int8"), int8_cosines, strict=True):
        if tolerance is None:
            del runs[label]
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
    print("min cosine to Keras:", cosines)
    for label, tolerance in zip(("onnx-int8", "litert-int8"), int8_cosines, strict=True):
        assert tolerance is None or cosines[label] >= tolerance, label
