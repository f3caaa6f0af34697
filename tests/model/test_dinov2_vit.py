"""DINOv2 ViT/14 in Keras against the torch module on random weights, at the pretraining grid and
at other (non-square) sizes where the position embeddings are interpolated as torch does."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.convert.dinov2 import dinov2_layer_weights, load_layer_weights
from sare_tf.layers import GeM
from sare_tf.model import PlaceEmbedding
from sare_tf.model.dinov2_vit import interpolation_matrix

torch = pytest.importorskip("torch")

from sare_tf.bench.torch_models import build_dinov2_vit, torch_forward  # noqa: E402


def _torch_bicubic_matrix(out_size, in_size):
    """One axis of torch's bicubic upsampling, read off torch itself (identity columns)."""
    eye = torch.eye(in_size, dtype=torch.float64)[None, None]  # [1, 1, in, in]
    resized = torch.nn.functional.interpolate(
        eye, scale_factor=((out_size + 0.1) / in_size, 1.0), mode="bicubic", align_corners=False
    )
    return resized[0, 0].numpy()  # [out, in]: row i = the weights of output i


@pytest.mark.parametrize("out_size", [16, 23, 37, 50])
def test_interpolation_matrix_is_torchs_bicubic(out_size):
    got = np.asarray(interpolation_matrix(out_size, 37), np.float64)
    np.testing.assert_allclose(
        got, _torch_bicubic_matrix(out_size, 37), atol=5e-6
    )  # float32 weights


@pytest.mark.parametrize("size", [(518, 518), (322, 322), (224, 308), (98, 140)])
def test_vit_small_equals_the_torch_module(size):
    vit = build_dinov2_vit(torch, dim=384, depth=12, heads=6, seed=1)
    state = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    model = PlaceEmbedding("dinov2-vits14", aggregator=GeM(name="gem"), trainable_from=None)
    load_layer_weights(model, dinov2_layer_weights(state, "", "test"), "test")
    images = np.random.default_rng(3).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    with torch.inference_mode():
        tokens = torch_forward(torch, vit, images)  # [B, 1 + h*w, D]
    want = tokens[:, 1:].reshape(2, size[0] // 14, size[1] // 14, 384)
    got = np.asarray(model.feature_model()(images))
    # float32: measured up to 1e-6 of the largest activation (the interpolation's weights are
    # torch's own float32 values; what remains is summation order)
    assert np.abs(got - want).max() <= 3e-6 * np.abs(want).max()


def test_dinov2_names_and_defaults():
    model = PlaceEmbedding("dinov2-vitb14", aggregator=GeM(name="gem"), input_shape=(224, 224, 3))
    assert model.trainable_from == "blocks_10"  # BoQ trains the last two blocks
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable == ["blocks_10", "blocks_11", "gem"]
    assert model.feature_model().output_shape == (None, 16, 16, 768)
