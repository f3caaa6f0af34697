"""CRN-reweighted NetVLAD against a float64 loop of the authors' Caffe deploy graph (ceil-mode
average pooling, context filters, fixed accumulation, bilinear deconvolution, reweighted VLAD)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sare_tf.layers import CRNNetVLAD
from sare_tf.model import build_embedding_model


def _caffe_average_pool(x):  # x [H, W, C]; kernel 3, stride 2, pad 0, ceil mode
    height, width = x.shape[:2]
    out_h, out_w = -(-(height - 3) // 2) + 1, -(-(width - 3) // 2) + 1
    out = np.zeros((out_h, out_w, x.shape[2]))
    for i in range(out_h):
        for j in range(out_w):
            window = x[2 * i : min(2 * i + 3, height), 2 * j : min(2 * j + 3, width)]
            out[i, j] = window.reshape(-1, x.shape[2]).mean(axis=0)
    return out


def _conv_same(x, kernel, bias):
    size = kernel.shape[0]
    padded = np.pad(x, ((size // 2,) * 2, (size // 2,) * 2, (0, 0)))
    out = np.zeros((*x.shape[:2], kernel.shape[-1]))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.einsum("abc,abco->o", padded[i : i + size, j : j + size], kernel) + bias
    return out


def _bilinear_deconv(mask):  # Caffe Deconvolution kernel 4, stride 2, pad 1, bilinear weights
    weights = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    height, width = mask.shape
    full = np.zeros((2 * height + 2, 2 * width + 2))
    for i in range(height):
        for j in range(width):
            full[2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += mask[i, j] * weights
    return full[1:-1, 1:-1]


def _reference(layer, features):
    w = [np.asarray(v, np.float64) for v in layer.weights]
    names = [v.name for v in layer.weights]
    get = dict(zip(names, w, strict=True))
    out = []
    for x in np.asarray(features, np.float64):
        pooled = _caffe_average_pool(x)
        context = np.concatenate([
            np.maximum(_conv_same(pooled, get[f"context_{s}x{s}_kernel"], get[f"context_{s}x{s}_bias"]), 0)
            for s in (5, 3, 7)
        ], axis=-1)  # fmt: skip
        mask = np.maximum(context @ get["accumulation_kernel"][0, 0] + get["accumulation_bias"], 0)
        mask = _bilinear_deconv(mask[..., 0])
        assert mask.shape == x.shape[:2]  # even sizes: the authors' graph is defined
        rows = x.reshape(-1, x.shape[-1])
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        logits = rows @ get["assignment_kernel"][0, 0]
        soft = np.exp(logits - logits.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        soft *= mask.reshape(-1, 1)
        vlad = np.stack(
            [
                (soft[:, k : k + 1] * (rows - get["centroids"][k])).sum(0)
                for k in range(layer.num_clusters)
            ]
        )
        vlad /= np.linalg.norm(vlad, axis=1, keepdims=True)
        flat = vlad.reshape(-1)
        out.append(flat / np.linalg.norm(flat))
    return np.array(out)


@pytest.mark.parametrize("size", [(6, 8), (10, 4)])
def test_crn_netvlad_equals_the_authors_graph(size):
    rng = np.random.default_rng(0)
    layer = CRNNetVLAD(4)
    features = rng.normal(0.2, 1.0, (2, *size, 16)).astype(np.float32)
    layer.build(features.shape)
    for variable in layer.weights:  # trained-looking: a mask that varies over the image
        variable.assign(rng.normal(0.1, 0.3, variable.shape).astype(np.float32))
    layer.accumulation_kernel.assign(np.ones(layer.accumulation_kernel.shape, np.float32))
    mask = np.asarray(layer.reweighting_mask(features))
    assert mask.std() > 0.01  # the reweighting is not uniform here
    got = keras.ops.convert_to_numpy(layer(features))
    np.testing.assert_allclose(got, _reference(layer, features), atol=2e-5)


def test_odd_sizes_are_fitted_and_the_model_builds_and_reloads(tmp_path):
    layer = CRNNetVLAD(3)
    assert np.asarray(layer.reweighting_mask(np.ones((1, 7, 9, 8), np.float32))).shape == (1, 7, 9)
    model = build_embedding_model("tiny", num_clusters=4, aggregator="crn-netvlad")
    assert (
        model.aggregator_name == "crn-netvlad"
        and not model.aggregator.accumulation_kernel.trainable
    )
    model.save(tmp_path / "crn.keras")
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    reloaded = keras.saving.load_model(tmp_path / "crn.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))
