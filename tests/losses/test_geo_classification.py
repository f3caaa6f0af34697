"""Geographic classification: cells on hand-made positions, the softmax log-loss against a
float64 loop, and a real training run whose export has no head."""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.data.cell_labels import assign_cells
from sare_tf.losses import GeoClassificationLoss, geo_classification_loss
from sare_tf.model import build_geo_classifier


def test_cells_are_the_non_empty_squares_of_a_fixed_grid():
    positions = [[0, 0], [24.9, 0], [25, 0], [0, -0.1], [100, 100], [110, 120]]
    cells = assign_cells(positions, cell_m=25.0)
    # grid (0,0) (0,0) (1,0) (0,-1) (4,4) (4,4): four non-empty cells, lexicographic order
    assert cells.cells.tolist() == [[0, -1], [0, 0], [1, 0], [4, 4]]
    assert cells.labels.tolist() == [1, 1, 2, 0, 3, 3]
    assert cells.num_cells == 4  # the 12 empty cells between them do not exist
    again = assign_cells(np.asarray(positions)[::-1], cell_m=25.0)
    assert again.labels.tolist() == cells.labels.tolist()[::-1]  # stable: order does not matter
    shifted = assign_cells(np.asarray(positions) + 1000.0, cell_m=25.0)
    assert shifted.labels.tolist() == cells.labels.tolist()
    with pytest.raises(ValueError, match="cell_m"):
        assign_cells(positions, cell_m=0)


def _loop_loss(labels, logits):
    out = []
    for label, row in zip(labels, np.asarray(logits, np.float64), strict=True):
        top = max(row)
        out.append(top + math.log(sum(math.exp(v - top) for v in row)) - row[label])
    return out


def test_loss_values_and_gradients_against_a_float64_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 7))
    labels = np.array([0, 6, 3, 3, 1])
    value = geo_classification_loss(labels, logits)
    np.testing.assert_allclose(np.asarray(value), _loop_loss(labels, logits), rtol=1e-12)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(geo_classification_loss(labels, variable))
    gradient = tape.gradient(total, variable).numpy()
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(gradient, softmax - np.eye(7)[labels], atol=1e-12)  # p - onehot
    uniform = geo_classification_loss(labels, np.zeros((5, 7)))
    np.testing.assert_allclose(np.asarray(uniform), math.log(7), rtol=1e-12)
    huge = geo_classification_loss([0], np.array([[1e4, -1e4, 0.0]], np.float32))
    assert np.isfinite(np.asarray(huge)).all()
    half = geo_classification_loss(labels, tf.constant(logits, tf.bfloat16))
    assert half.dtype == tf.float32 and np.isfinite(half.numpy()).all()
    restored = keras.losses.deserialize(keras.losses.serialize(GeoClassificationLoss()))
    assert isinstance(restored, GeoClassificationLoss) and restored.dtype == "float32"


def test_the_head_starts_small_and_shares_the_embedding(tiny_model):
    classifier = build_geo_classifier(tiny_model, num_cells=30, seed=0)
    kernel = classifier.get_layer("geo_head").kernel.numpy()
    assert kernel.shape == (512, 30) and 0.007 < kernel.std() < 0.013
    assert classifier.layers[1] is tiny_model
    with pytest.raises(ValueError, match="at least 2 non-empty cells"):
        build_geo_classifier(tiny_model, 1)


@pytest.mark.slow
def test_train_geo_classification_and_export_without_the_head(tiny_city, tmp_path):
    from sare_tf import cli

    out = tmp_path / "geo"
    argv = ["train", "--dataset", tiny_city["train"], "--val-dataset", tiny_city["val"],
            "--loss", "geo-classification", "--backbone", "tiny", "--num-clusters", "4",
            "--image-size", "48", "64", "--epochs", "1", "--steps-per-epoch", "3",
            "--batch-size", "2", "--num-negatives", "2", "--cluster-images", "8", "--lr", "0.01",
            "--precision", "float32", "--out", str(out), "--quiet", "--no-tensorboard"]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["geo_classification"]["num_cells"] >= 2
    assert np.isfinite(summary["epochs"][0]["loss"]) and "mining" in summary
    best = out / summary["best"]["path"]
    model = keras.saving.load_model(best, compile=False)
    assert "geo_head" not in [layer.name for layer in model.layers]
    assert model.output_shape[-1] == summary["model"]["descriptor_dim"] == 4 * 128  # K x D
    assert (
        cli.main(["export", "--model", str(best), "--name", "geo", "--root", str(tmp_path / "exp")])
        == 0
    )
    served = tf.saved_model.load(str(tmp_path / "exp" / "geo" / "1"))
    assert not any("geo_head" in v.name for v in served.variables)
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 64, 3)).astype(np.float32)
    got = served.signatures["serving_default"](image=tf.constant(images))["descriptor"].numpy()
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(images)), atol=1e-5)
    assert os.path.isfile(out / "last.keras")
