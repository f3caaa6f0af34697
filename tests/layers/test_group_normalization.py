"""sare_tf's GroupNormalization against a float64 loop over the paper's equations, against
Keras' own layer (values and gradients), under mixed precision, and saved and reloaded."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.layers import GroupNormalization
from sare_tf.layers.group_normalization import group_normalization_gradients, normalize_groups


def _reference(x, groups, gamma, beta, epsilon):
    """Wu and He (2018) eq. (1)-(3), one image and one group at a time, in float64."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    per_group = x.shape[-1] // groups
    for image in range(x.shape[0]):
        for group in range(groups):
            channels = slice(group * per_group, (group + 1) * per_group)
            values = x[image, ..., channels]
            mean = values.mean()
            variance = ((values - mean) ** 2).mean()
            out[image, ..., channels] = (values - mean) / np.sqrt(variance + epsilon)
    return out * gamma + beta


def _one_pass_float32(x, groups, gamma, beta, epsilon):
    """The unstable alternative: variance as E[x^2] - E[x]^2, in float32."""
    grouped = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups).astype(np.float32)
    mean = grouped.mean(axis=(1, 3), keepdims=True, dtype=np.float32)
    variance = np.maximum((grouped**2).mean(axis=(1, 3), keepdims=True) - mean**2, 0)
    normalised = (grouped - mean) / np.sqrt(variance + np.float32(epsilon))
    return normalised.reshape(x.shape) * gamma + beta


def _pair(groups, shape, center=True, scale=True, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    ours = GroupNormalization(groups, center=center, scale=scale, dtype=dtype)
    keras_layer = keras.layers.GroupNormalization(groups, center=center, scale=scale, dtype=dtype)
    for layer in (ours, keras_layer):
        layer.build(shape)
    weights = [rng.normal(size=w.shape) for w in ours.weights]
    ours.set_weights(weights)
    keras_layer.set_weights(weights)
    return ours, keras_layer, weights


@pytest.mark.parametrize(
    "groups, shape, center, scale",
    [
        (8, (3, 5, 7, 32), True, True),
        (4, (2, 9, 4, 12), False, True),
        (1, (2, 3, 3, 6), True, False),
        (3, (2, 6), True, True),  # [B, C]: each group's statistics over its channels
        (2, (2, 4, 4, 3, 8), True, True),  # 5D
    ],
)
def test_output_is_the_papers_normalisation(groups, shape, center, scale):
    rng = np.random.default_rng(1)
    # Mean 600 standard deviations from zero: the float32 result is good to ~1e-4 (the shift
    # -mean/std + beta is rounded near 600, in Keras and PyTorch alike); a one-pass variance
    # E[x^2] - E[x]^2 would be off by far more.
    x = (rng.normal(size=shape) * 0.5 + 300.0).astype(np.float32)
    ours, keras_layer, weights = _pair(groups, shape, center, scale)
    gamma = weights[0] if scale else 1.0
    beta = weights[-1] if center else 0.0
    expected = _reference(x, groups, gamma, beta, ours.epsilon)
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours(x).numpy(), keras_layer(x).numpy(), rtol=0, atol=1e-3)
    one_pass = _one_pass_float32(x, groups, gamma, beta, ours.epsilon)
    assert np.abs(one_pass - expected).max() > 1e-2  # the tolerance tells the two apart
    assert ours.get_config() == {**keras_layer.get_config(), "name": ours.name}


@pytest.mark.parametrize("training", [False, True])
def test_gradients_equal_keras_layers_in_float64(training):
    """Inference mode differentiates the plain ops; training mode uses the closed-form gradient."""
    shape = (2, 6, 5, 16)
    x = tf.constant(np.random.default_rng(2).normal(size=shape) * 2 + 1)
    ours, keras_layer, _ = _pair(4, shape, dtype="float64")
    upstream = tf.constant(np.random.default_rng(3).normal(size=shape))
    gradients = []
    for layer in (ours, keras_layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * upstream)
        gradients.append(tape.gradient(loss, [x, *layer.trainable_variables]))
    assert ours(x).dtype == tf.float64
    for mine, theirs in zip(*gradients, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    "center, scale", [(True, True), (False, True), (True, False), (False, False)]
)
def test_closed_form_gradient_equals_autodiff_of_the_normalisation(center, scale):
    rng = np.random.default_rng(6)
    pixels = tf.constant(rng.normal(size=(3, 30, 12)) * 3 + 5)
    upstream = tf.constant(rng.normal(size=(3, 30, 12)))
    gamma = tf.constant(rng.normal(size=12)) if scale else None
    beta = tf.constant(rng.normal(size=12)) if center else None
    with tf.GradientTape() as tape:
        tape.watch(pixels)
        watched = [p for p in (gamma, beta) if p is not None]
        tape.watch(watched)
        outputs, mean, inverse_std = normalize_groups(pixels, 3, 1e-3, gamma, beta)
        loss = tf.reduce_sum(outputs * upstream)
    expected = tape.gradient(loss, [pixels, *watched])
    d_pixels, d_gamma, d_beta = group_normalization_gradients(
        pixels, upstream, mean, inverse_std, 3, gamma
    )
    closed_form = [d_pixels, *([d_gamma] if scale else []), *([d_beta] if center else [])]
    for mine, autodiff in zip(closed_form, expected, strict=True):
        np.testing.assert_allclose(mine.numpy(), autodiff.numpy(), rtol=1e-10, atol=1e-12)


def test_training_step_gradients_match_in_float32_with_a_large_mean():
    """The closed form sums dy * x uncentred (as PyTorch does): still float32-accurate when the
    group mean is 50 standard deviations from zero."""
    shape = (4, 12, 10, 32)
    rng = np.random.default_rng(8)
    x64 = rng.normal(size=shape) + 50.0
    upstream = rng.normal(size=shape)
    ours, _, weights = _pair(8, shape)
    reference, _, _ = _pair(8, shape, dtype="float64")
    reference.set_weights(weights)
    results = []
    for layer, dtype in ((ours, tf.float32), (reference, tf.float64)):
        x = tf.constant(x64, dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * tf.constant(upstream, dtype))
        results.append([g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_variables])])
    for mine, exact in zip(*results, strict=True):
        scale = np.abs(exact).max()
        np.testing.assert_allclose(mine, exact, rtol=0, atol=2e-4 * scale)


def test_mixed_bfloat16_computes_statistics_in_float32():
    shape = (2, 8, 8, 16)
    x = (np.random.default_rng(4).normal(size=shape) * 4 + 50).astype(np.float32)
    ours, keras_layer, _ = _pair(4, shape, dtype="mixed_bfloat16")
    output = ours(tf.cast(x, tf.bfloat16))
    assert output.dtype == tf.bfloat16
    expected = keras_layer(tf.cast(x, tf.bfloat16)).numpy().astype(np.float32)
    # Both normalise the same bf16 inputs in float32 and round the output to bf16 once.
    np.testing.assert_allclose(output.numpy().astype(np.float32), expected, atol=0.02)


def test_saved_model_reloads_as_the_same_layer(tmp_path):
    inputs = keras.Input((6, 6, 8))
    model = keras.Model(inputs, GroupNormalization(2, name="norm")(inputs))
    model.get_layer("norm").set_weights([np.full(8, 2.0), np.full(8, -1.0)])
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded.get_layer("norm")) is GroupNormalization
    x = np.random.default_rng(5).normal(size=(3, 6, 6, 8)).astype(np.float32)
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())
