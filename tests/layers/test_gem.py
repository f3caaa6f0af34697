"""GeM pooling (+ FC): against a float64 loop of its definition, and as a Keras layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sare_tf.layers import GeM


def _gem_loop(features, p, kernel=None, bias=None, eps=1e-6, normalize_input=True):
    """Radenovic et al. eq. (3), location by location, in float64."""
    features = np.asarray(features, np.float64)
    out = []
    for image in features:
        rows = image.reshape(-1, image.shape[-1])
        if normalize_input:
            rows = np.array([row / max(np.linalg.norm(row), 1e-6) for row in rows])
        pooled = np.array(
            [
                np.mean([max(v, eps) ** p for v in rows[:, d]]) ** (1.0 / p)
                for d in range(rows.shape[1])
            ]
        )
        if kernel is not None:
            pooled = pooled @ kernel + bias
        out.append(pooled / np.linalg.norm(pooled))
    return np.array(out)


@pytest.mark.parametrize("output_dim", [None, 5])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_gem_equals_its_definition(output_dim, normalize_input):
    rng = np.random.default_rng(0)
    features = rng.normal(0.3, 1.0, (3, 4, 6, 7)).astype(np.float32)
    layer = GeM(output_dim, p=3.0, normalize_input=normalize_input)
    layer.build(features.shape)
    weights = [np.array([2.7], np.float32)]
    if output_dim:
        weights += [rng.normal(size=(7, output_dim)).astype(np.float32),
                    rng.normal(size=output_dim).astype(np.float32)]  # fmt: skip
    layer.set_weights(weights)
    got = keras.ops.convert_to_numpy(layer(features))
    want = _gem_loop(features, 2.7, *weights[1:], normalize_input=normalize_input)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_p_one_is_average_pooling_and_large_p_tends_to_max():
    features = np.random.default_rng(1).uniform(0.1, 1.0, (2, 3, 3, 4)).astype(np.float32)
    mean = features.mean(axis=(1, 2))
    maximum = features.max(axis=(1, 2))
    layer = GeM(p=1.0, normalize_input=False)
    np.testing.assert_allclose(
        layer(features), mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-5
    )
    layer = GeM(p=60.0, normalize_input=False)
    expected = maximum / np.linalg.norm(maximum, axis=1, keepdims=True)
    np.testing.assert_allclose(layer(features), expected, atol=0.03)


def test_float32_output_under_mixed_precision_and_config_round_trip():
    layer = GeM(6, p=2.5, eps=1e-5, normalize_input=False, dtype="mixed_bfloat16", name="gem")
    out = layer(np.ones((1, 2, 2, 3), np.float32))
    assert out.dtype == "float32" and layer.exponent.dtype == "float32"
    clone = GeM.from_config(layer.get_config())
    assert (clone.output_dim, clone.p, clone.eps, clone.normalize_input) == (6, 2.5, 1e-5, False)


def test_p_is_learnt_and_bad_settings_are_refused():
    layer = GeM(4)
    layer.build((None, 2, 2, 3))
    assert [w.name for w in layer.trainable_weights] == ["p", "fc_kernel", "fc_bias"]
    with pytest.raises(ValueError, match="output_dim"):
        GeM(0)
    with pytest.raises(ValueError, match="`p` must be positive"):
        GeM(p=0.0)
