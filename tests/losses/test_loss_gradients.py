"""Gradients: the SARE appendix closed forms, finite differences, and the paper's behaviour checks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from loss_cases import pure_loss_fn
from loss_reference import (
    ALL_NAMES,
    finite_difference_gradient,
    joint_sare_gradient,
    kernel_value,
    random_unit_tuples,
)

from sare_tf.losses import sare_loss

KERNELS = ["gaussian", "cauchy", "exponential"]


def tape_gradient(fn, y_pred):
    """Value `[B]` and gradient of `sum(fn(y))` at `y_pred`, in the dtype of `y_pred`."""
    variable = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        per_tuple = fn(variable)
        total = tf.reduce_sum(per_tuple)
    return per_tuple.numpy(), tape.gradient(total, variable).numpy()


@pytest.mark.parametrize("num_negatives", [1, 3, 10])
@pytest.mark.parametrize("kernel", KERNELS)
def test_joint_gradients_equal_appendix_closed_forms(kernel, num_negatives):
    # Gaussian eqs. (10)-(12), Cauchy (14)-(16), exponential (18)-(20).
    y_pred = random_unit_tuples(np.random.default_rng(num_negatives), 3, num_negatives, 5)
    _, gradient = tape_gradient(lambda y: sare_loss(y, kernel, "joint"), y_pred)
    assert gradient.dtype == np.float64
    expected = np.stack([joint_sare_gradient(one_tuple, kernel) for one_tuple in y_pred])
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-6)
    # The query gradient balances the others (translation invariance), as the closed forms say.
    np.testing.assert_allclose(gradient[:, 0], -gradient[:, 1:].sum(axis=1), atol=1e-12)


@pytest.mark.parametrize(
    "name",
    [
        "sare-ind",
        "sare-ind-cauchy",
        "sare-ind-exp",
        "triplet",
        "contrastive",
        "npair",
        "angular",
        "lifted",
    ],
)
def test_gradients_match_finite_differences_of_the_numpy_reference(name):
    y_pred = random_unit_tuples(np.random.default_rng(11), 2, 3, 4)
    _, gradient = tape_gradient(pure_loss_fn(name), y_pred)
    np.testing.assert_allclose(
        gradient, finite_difference_gradient(y_pred, name), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_single_negative_joint_and_independent_agree(kernel):
    y_pred = random_unit_tuples(np.random.default_rng(12), 4, 1, 6)
    joint_value, joint_gradient = tape_gradient(lambda y: sare_loss(y, kernel, "joint"), y_pred)
    ind_value, ind_gradient = tape_gradient(lambda y: sare_loss(y, kernel, "independent"), y_pred)
    np.testing.assert_allclose(ind_value, joint_value, rtol=1e-12)
    np.testing.assert_allclose(ind_gradient, joint_gradient, rtol=1e-10, atol=1e-14)


def test_gaussian_single_negative_gradients_have_table_1_form():
    # Table 1 with one negative: dL/dp = 2(1-c_p|q)(f(p)-f(q)), dL/dn = 2(1-c_p|q)(f(q)-f(n))
    # and dL/dq = 2(1-c_p|q)(f(n)-f(p)), since c_n|q = 1 - c_p|q.
    y_pred = random_unit_tuples(np.random.default_rng(13), 5, 1, 4)
    _, gradient = tape_gradient(lambda y: sare_loss(y, "gaussian", "joint"), y_pred)
    for one_tuple, grad in zip(y_pred, gradient, strict=True):
        query, positive, negative = one_tuple
        k_p = kernel_value(query, positive, "gaussian")
        k_n = kernel_value(query, negative, "gaussian")
        one_minus_c_p = 1.0 - k_p / (k_p + k_n)
        np.testing.assert_allclose(grad[1], 2 * one_minus_c_p * (positive - query), atol=1e-12)
        np.testing.assert_allclose(grad[2], 2 * one_minus_c_p * (query - negative), atol=1e-12)
        np.testing.assert_allclose(grad[0], 2 * one_minus_c_p * (negative - positive), atol=1e-12)


def _negative_gradient_norms(name, distances, dtype="float32"):
    """|dL/dn| for q = 0, p = 0.1 e1 and one negative at `distance` along e2."""
    norms = []
    for distance in distances:
        one_tuple = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, distance, 0.0]], dtype)
        _, gradient = tape_gradient(pure_loss_fn(name), one_tuple[None])
        norms.append(float(np.linalg.norm(gradient[0, 2].astype("float64"))))  # no underflow
    return np.array(norms)


@pytest.mark.parametrize(
    "name", ["sare-joint", "sare-joint-cauchy", "sare-joint-exp", "sare-ind-exp"]
)
def test_sare_gradient_of_a_far_negative_decays_but_never_vanishes(name):
    distances = [1.0, 2.0, 4.0, 8.0]
    norms = _negative_gradient_norms(name, distances)
    assert np.all(np.diff(norms) < 0), norms
    assert np.all(norms > 0), norms  # even exp(-64) ~ 1.6e-28 survives in float32
    np.testing.assert_allclose(
        norms, _negative_gradient_norms(name, distances, "float64"), rtol=1e-4
    )


def test_triplet_gradient_is_exactly_zero_once_the_margin_is_met():
    # dp = 0.01, margin 0.1: the negative stops mattering beyond sqrt(0.11) ~ 0.33.
    inside, just_outside, far = _negative_gradient_norms("triplet", [0.3, 0.34, 4.0])
    np.testing.assert_allclose(inside, 2 * 0.3)  # d/dn of -|q-n|^2 is 2 |n-q|
    assert just_outside == 0.0 and far == 0.0


def test_contrastive_gradient_is_exactly_zero_beyond_the_margin():
    inside, just_outside, far = _negative_gradient_norms("contrastive", [0.5, 0.71, 4.0])
    np.testing.assert_allclose(inside, 0.7 - 0.5, rtol=1e-6)  # (tau - d) * d(d)/dn
    assert just_outside == 0.0 and far == 0.0


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradient_flows_through_every_embedding_of_a_typical_tuple(name):
    y_pred = random_unit_tuples(np.random.default_rng(14), 2, 3, 4)
    y_pred[:, 2:] = y_pred[:, :1] + 0.1 * y_pred[:, 2:]  # hard negatives, inside every margin
    _, gradient = tape_gradient(pure_loss_fn(name), y_pred)
    assert np.all(np.linalg.norm(gradient, axis=-1) > 0)
