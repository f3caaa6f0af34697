"""Finite values and gradients at degenerate tuples, huge distances and in half precision."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_cases import pure_loss_fn
from loss_reference import ALL_NAMES, SARE_NAMES, SARE_SETTINGS, random_unit_tuples, tuple_loss

from sare_tf.losses import get_loss
from sare_tf.losses._distances import safe_norm


def value_and_gradient(fn, y_pred):
    variable = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        per_tuple = fn(variable)
        total = tf.reduce_sum(per_tuple)
    return per_tuple.numpy(), tape.gradient(total, variable).numpy()


def _unit(dim, axis, sign=1.0):
    vector = np.zeros(dim)
    vector[axis] = sign
    return vector


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_identical_embeddings_give_hand_values_and_zero_gradients(name, dtype):
    num_negatives = 3
    y_pred = np.tile(_unit(5, 2), (2, 2 + num_negatives, 1)).astype(dtype)
    value, gradient = value_and_gradient(pure_loss_fn(name), y_pred)
    expected = {
        "triplet": 0.1,  # max(0, margin + 0 - 0)
        "contrastive": 0.5 * 0.7**2,  # the negative sits at distance 0 < tau
        "npair": math.log(1 + num_negatives),  # every logit q.n - q.p is 0
        "angular": math.log(1 + num_negatives * math.exp(4.0)),  # 4 * 1 * 2 - 2 * 2 * 1 = 4
        "lifted": 0.5 * (1.0 + math.log(2 * num_negatives)) ** 2,  # J = log(2N e^1) + 0
    }.get(name)
    if expected is None:  # SARE: every kernel value is 1, so c_p|q = 1 / (1 + N) or 1/2
        expected = math.log(1 + num_negatives) if "joint" in name else math.log(2)
    np.testing.assert_allclose(value, [expected, expected], rtol=1e-6)
    assert np.all(np.isfinite(gradient))
    unit = y_pred[:, :1]
    if name == "npair":  # s_i = q.n_i - q.p, weights w_i = 1 / (1 + N) at s_i = 0
        # dL/dq = sum w (n_i - p) = 0; dL/dp = -N w q; dL/dn_i = w q (norm changes, which the
        # descriptor's final L2 normalisation removes)
        w = 1.0 / (1 + num_negatives)
        expected_gradient = np.concatenate(
            [0 * unit, -num_negatives * w * unit] + [w * unit] * num_negatives, 1
        )
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-7)
    elif name == "angular":  # s_i = 4 (q + p).n_i - 4 q.p: dL/dq = dL/dp = 0, dL/dn_i = 8 w_i u
        w = math.exp(4.0) / (1 + num_negatives * math.exp(4.0))
        expected_gradient = np.concatenate([0 * unit, 0 * unit] + [8 * w * unit] * num_negatives, 1)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(gradient, 0.0)  # symmetric: no direction to move in


def _antipodal_cases(dim=4, num_negatives=3):
    query = _unit(dim, 0)
    everything_opposite = np.stack([query, -query] + [-query] * num_negatives)
    negatives_on_query = np.stack([query, -query] + [query] * num_negatives)  # worst ranking
    positive_on_query = np.stack([query, query] + [-query] * num_negatives)  # perfect ranking
    return np.stack([everything_opposite, negatives_on_query, positive_on_query])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_antipodal_embeddings_are_finite_and_correct(name, dtype):
    y_pred = _antipodal_cases()
    value, gradient = value_and_gradient(pure_loss_fn(name), y_pred.astype(dtype))
    np.testing.assert_allclose(value, [tuple_loss(t, name) for t in y_pred], rtol=1e-6)
    assert np.all(np.isfinite(gradient))
    if name.startswith("sare-joint") and name != "sare-joint-exp":
        # worst case dp = 4, dn_i = 0: log(1 + N exp(4)) and log(1 + N * 5) by hand
        expected = math.log(1 + 3 * math.exp(4)) if name == "sare-joint" else math.log(16)
        np.testing.assert_allclose(value[1], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_ten_negatives_equal_to_the_query(name, dtype):
    rng = np.random.default_rng(21)
    y_pred = random_unit_tuples(rng, 3, 10, 8)
    y_pred[:, 2:] = y_pred[:, :1]
    value, gradient = value_and_gradient(pure_loss_fn(name), y_pred.astype(dtype))
    np.testing.assert_allclose(value, [tuple_loss(t, name) for t in y_pred], rtol=1e-5)
    assert np.all(np.isfinite(gradient))
    assert np.all(np.linalg.norm(gradient[:, 1], axis=-1) > 0)  # the positive is still pulled in


@pytest.mark.parametrize("name", SARE_NAMES)
def test_huge_distances_do_not_overflow(name):
    # Not unit norm: dp = 1e4 would overflow exp() in a naive log(1 + exp(dp - dn)).
    far = np.array([[[0.0, 0.0], [100.0, 0.0], [0.0, 0.0]]], "float32")
    near = np.array([[[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]]], "float32")
    kernel, _ = SARE_SETTINGS[name]
    expected_far = {"gaussian": 1e4, "cauchy": math.log(1 + 10001.0), "exponential": 100.0}[kernel]
    fn = pure_loss_fn(name)
    for y_pred, expected in [(far, expected_far), (near, None)]:
        value, gradient = value_and_gradient(fn, y_pred)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(gradient))
        if expected is not None:
            np.testing.assert_allclose(value, [expected], rtol=1e-6)
        else:
            assert 0.0 <= value[0] < 1e-2  # well ranked: (nearly) nothing to learn


def test_safe_norm_has_exact_values_and_a_zero_gradient_at_zero():
    for dtype in ["float32", "float64"]:
        x = tf.Variable(np.array([[0.0, 0.0, 0.0], [3.0, -4.0, 0.0], [1e-3, 0.0, 0.0]], dtype))
        with tf.GradientTape(persistent=True) as tape:
            squared = tf.reduce_sum(x * x, axis=-1)
            safe = safe_norm(squared)
            naive = tf.sqrt(squared)
        np.testing.assert_allclose(safe.numpy(), [0.0, 5.0, 1e-3], rtol=1e-6)
        safe_gradient = tape.gradient(safe, x).numpy()
        np.testing.assert_allclose(
            safe_gradient, [[0, 0, 0], [0.6, -0.8, 0], [1, 0, 0]], rtol=1e-6, atol=0
        )
        # The hazard being avoided: the plain square root gives NaN at 0.
        assert np.isnan(tape.gradient(naive, x).numpy()[0]).all()


# Rounding unit-norm embeddings to a float format with unit roundoff u moves each coordinate by
# at most u |x_k|, so q - x moves by at most 2u in norm; then |d dp| <= 2 |q-p| 2u + 4u^2 <= 8u
# (+ tiny), every log-ratio r_i moves by <= 16u, and the SARE losses (whose gradients w.r.t. the
# r_i are non-negative and sum to <= 1) by <= 16u; triplet likewise, contrastive by less.
# bfloat16: u = 2^-9 -> 2^-5; float16: u = 2^-11 -> 2^-7.
HALF_TOLERANCE = {"bfloat16": 1.01 * 2.0**-5, "float16": 1.01 * 2.0**-7}


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_half_precision_inputs_are_computed_in_float32(name, half):
    y32 = random_unit_tuples(np.random.default_rng(22), 4, 3, 16).astype("float32")
    y_half = tf.cast(y32, half)
    fn = pure_loss_fn(name)
    value = fn(y_half)
    assert value.dtype == tf.float32
    # Bit-identical to float32 maths on the rounded inputs: nothing ran in half precision.
    np.testing.assert_array_equal(value.numpy(), fn(tf.cast(y_half, "float32")).numpy())
    np.testing.assert_allclose(value.numpy(), fn(y32).numpy(), rtol=0, atol=HALF_TOLERANCE[half])

    loss = get_loss(name)
    object_value = loss(None, y_half)
    assert object_value.dtype == tf.float32
    np.testing.assert_allclose(
        float(object_value), float(loss(None, y32)), atol=HALF_TOLERANCE[half]
    )

    variable = tf.Variable(y_half)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(fn(variable))
    gradient = tape.gradient(total, variable)
    assert gradient.dtype == half
    assert np.all(np.isfinite(tf.cast(gradient, "float32").numpy()))


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["sare-joint", "sare-ind-exp", "contrastive"])
def test_half_precision_degenerate_tuples_stay_finite(name, half):
    y_pred = tf.cast(_antipodal_cases(), half)
    value, gradient = value_and_gradient(pure_loss_fn(name), y_pred)
    assert np.all(np.isfinite(value))
    assert np.all(np.isfinite(np.asarray(gradient, "float32")))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_losses_built_under_a_half_policy_compute_in_float32(policy):
    keras.config.set_dtype_policy(policy)
    y32 = random_unit_tuples(np.random.default_rng(23), 2, 3, 8).astype("float32")
    for name in ALL_NAMES:
        loss = get_loss(name)
        assert loss.dtype == "float32"
        value = loss(None, tf.cast(y32, "bfloat16"))
        assert value.dtype == tf.float32
        upcast = tf.cast(tf.cast(y32, "bfloat16"), "float32")
        np.testing.assert_allclose(value.numpy(), np.mean(pure_loss_fn(name)(upcast)), rtol=1e-6)
    assert get_loss("sare-joint", dtype="mixed_bfloat16").dtype == "float32"
    assert get_loss("sare-joint", dtype="float64").dtype == "float64"
