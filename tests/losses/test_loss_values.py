"""Loss values against numpy loops, hand-worked cases, and the API's argument checks."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest
from loss_cases import pure_loss_fn
from loss_reference import (
    ALL_NAMES,
    SARE_SETTINGS,
    batch_loss,
    kernel_value,
    random_unit_tuples,
    tuple_loss,
)

from sare_tf import losses
from sare_tf.losses import (
    CauchySARE,
    ContrastiveLoss,
    ExponentialSARE,
    GaussianSARE,
    SARELoss,
    TripletRankingLoss,
    get_loss,
    sare_loss,
    sare_probabilities,
)

SHAPES = [(1, 1, 3), (4, 3, 8), (3, 10, 16)]  # (B, N, D)


@pytest.mark.parametrize("batch, num_negatives, dim", SHAPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_pure_functions_match_float64_loops(name, batch, num_negatives, dim):
    rng = np.random.default_rng(batch * 100 + num_negatives)
    y_pred = random_unit_tuples(rng, batch, num_negatives, dim)
    per_tuple = keras.ops.convert_to_numpy(pure_loss_fn(name)(y_pred))
    assert per_tuple.dtype == np.float64 and per_tuple.shape == (batch,)
    expected = [tuple_loss(one_tuple, name) for one_tuple in y_pred]
    np.testing.assert_allclose(per_tuple, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch, num_negatives, dim", SHAPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_loss_objects_average_over_tuples(name, batch, num_negatives, dim):
    rng = np.random.default_rng(7 + batch + num_negatives)
    y_pred = random_unit_tuples(rng, batch, num_negatives, dim)
    expected = batch_loss(y_pred, name)
    y_true = np.zeros((batch,), "float32")

    value = get_loss(name)(y_true, y_pred.astype("float32"))
    assert value.dtype == "float32" and tuple(value.shape) == ()
    np.testing.assert_allclose(float(value), expected, rtol=2e-6, atol=1e-7)

    value64 = get_loss(name, dtype="float64")(y_true, y_pred)
    assert value64.dtype == "float64"
    np.testing.assert_allclose(float(value64), expected, rtol=1e-12)

    per_tuple = get_loss(name, reduction=None, dtype="float64")(y_true, y_pred)
    np.testing.assert_allclose(per_tuple, [tuple_loss(t, name) for t in y_pred], rtol=1e-12)


def _circle(angle_degrees):
    angle = math.radians(angle_degrees)
    return [math.cos(angle), math.sin(angle)]


# q = (1, 0), p at 90 degrees, n at 180 degrees: dp = 2, dn = 4, sp = sqrt 2, sn = 2.
ONE_NEGATIVE = [_circle(0), _circle(90), _circle(180)]
# q = (1, 0), p at 60 degrees (dp = 1), n1 at 90 (dn = 2), n2 at -30 (dn = 2 - sqrt 3,
# sn = 2 sin 15 degrees).
SIN15 = (math.sqrt(6) - math.sqrt(2)) / 4
TWO_NEGATIVES = [_circle(0), _circle(60), _circle(90), _circle(-30)]
HAND_WORKED = {
    "sare-joint": (
        math.log(1 + math.exp(-2)),
        math.log(1 + math.exp(-1) + math.exp(math.sqrt(3) - 1)),
    ),
    "sare-ind": (
        math.log(1 + math.exp(-2)),
        (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(math.sqrt(3) - 1))) / 2,
    ),
    "sare-joint-cauchy": (math.log(1.6), math.log(1 + 2 / 3 + 2 / (3 - math.sqrt(3)))),
    "sare-ind-cauchy": (
        math.log(1.6),
        (math.log(1 + 2 / 3) + math.log(1 + 2 / (3 - math.sqrt(3)))) / 2,
    ),
    "sare-joint-exp": (
        math.log(1 + math.exp(math.sqrt(2) - 2)),
        math.log(1 + math.exp(1 - math.sqrt(2)) + math.exp(1 - 2 * SIN15)),
    ),
    "sare-ind-exp": (
        math.log(1 + math.exp(math.sqrt(2) - 2)),
        (math.log(1 + math.exp(1 - math.sqrt(2))) + math.log(1 + math.exp(1 - 2 * SIN15))) / 2,
    ),
    "triplet": (0.0, (0.0 + (math.sqrt(3) - 0.9)) / 2),
    "contrastive": (1.0, 0.5 + 0.25 * (0.7 - 2 * SIN15) ** 2),
    # q.p = 0, q.n = -1 | q.p = 1/2, q.n1 = 0, q.n2 = sqrt3/2
    "npair": (
        math.log(1 + math.exp(-1)),
        math.log(1 + math.exp(-0.5) + math.exp((math.sqrt(3) - 1) / 2)),
    ),
    # s_i = 4 (q + p).n_i - 4 q.p: -4 | both 4 (sqrt3/2) - 2
    "angular": (math.log(1 + math.exp(-4)), math.log(1 + 2 * math.exp(2 * math.sqrt(3) - 2))),
    # J = log(sum exp(1 - D_qn) + sum exp(1 - D_pn)) + D_qp; chords 2 sin(angle / 2)
    "lifted": (
        0.5 * (math.log(math.exp(1 - 2) + math.exp(1 - math.sqrt(2))) + math.sqrt(2)) ** 2,
        0.5 * (math.log(2 * math.exp(1 - math.sqrt(2)) + 2 * math.exp(1 - 2 * SIN15)) + 1) ** 2,
    ),
}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_hand_worked_unit_circle_values(name):
    one_expected, two_expected = HAND_WORKED[name]
    fn = pure_loss_fn(name)
    np.testing.assert_allclose(fn(np.array([ONE_NEGATIVE]))[0], one_expected, rtol=1e-14)
    np.testing.assert_allclose(fn(np.array([TWO_NEGATIVES]))[0], two_expected, rtol=1e-14)
    both = np.array([TWO_NEGATIVES, TWO_NEGATIVES[::-1]], "float32")
    np.testing.assert_allclose(float(get_loss(name)(None, both)), batch_loss(both, name), rtol=1e-6)


def test_triplet_with_swapped_positive_and_negative():
    swapped = [ONE_NEGATIVE[0], ONE_NEGATIVE[2], ONE_NEGATIVE[1]]  # dp = 4, dn = 2
    np.testing.assert_allclose(losses.triplet_ranking_loss(np.array([swapped]))[0], 2.1)
    np.testing.assert_allclose(losses.triplet_ranking_loss(np.array([swapped]), margin=0.5)[0], 2.5)
    np.testing.assert_allclose(
        losses.contrastive_loss(np.array([swapped]), margin=1.5)[0],
        2.0 + 0.5 * (1.5 - math.sqrt(2)) ** 2,
    )


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy", "exponential"])
def test_probabilities_are_normalised_kernels_and_joint_loss_is_minus_log_c_p(kernel):
    y_pred = random_unit_tuples(np.random.default_rng(3), 3, 4, 6)
    probabilities = keras.ops.convert_to_numpy(sare_probabilities(y_pred, kernel))
    for one_tuple, row in zip(y_pred, probabilities, strict=True):
        kernels = np.array([kernel_value(one_tuple[0], x, kernel) for x in one_tuple[1:]])
        np.testing.assert_allclose(row, kernels / kernels.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        sare_loss(y_pred, kernel, "joint"), -np.log(probabilities[:, 0]), rtol=1e-12
    )


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy", "exponential"])
def test_independent_is_the_mean_of_single_negative_losses(kernel):
    y_pred = random_unit_tuples(np.random.default_rng(4), 2, 5, 3)
    singles = [sare_loss(y_pred[:, [0, 1, 2 + i]], kernel, "joint") for i in range(5)]
    np.testing.assert_allclose(
        sare_loss(y_pred, kernel, "independent"), np.mean(singles, axis=0), rtol=1e-12
    )


@pytest.mark.parametrize(
    "subclass, kernel",
    [(GaussianSARE, "gaussian"), (CauchySARE, "cauchy"), (ExponentialSARE, "exponential")],
)
@pytest.mark.parametrize("negatives", ["joint", "independent"])
def test_kernel_subclasses_equal_sareloss_with_the_kernel_name(subclass, kernel, negatives):
    y_pred = random_unit_tuples(np.random.default_rng(5), 3, 3, 4).astype("float32")
    fixed = subclass(negatives=negatives)
    generic = SARELoss(kernel=kernel, negatives=negatives)
    assert float(fixed(None, y_pred)) == float(generic(None, y_pred))
    assert fixed.kernel == kernel and fixed.negatives == negatives
    assert "kernel" not in fixed.get_config()
    assert generic.get_config()["kernel"] == kernel


def test_get_loss_maps_command_line_names():
    expected = {
        "sare-joint": (GaussianSARE, "joint"),
        "sare-ind": (GaussianSARE, "independent"),
        "sare-joint-cauchy": (CauchySARE, "joint"),
        "sare-ind-cauchy": (CauchySARE, "independent"),
        "sare-joint-exp": (ExponentialSARE, "joint"),
        "sare-ind-exp": (ExponentialSARE, "independent"),
    }
    assert set(losses.LOSS_NAMES) == set(ALL_NAMES) | set(losses.IMAGE_LOSSES)
    for name, (cls, negatives) in expected.items():
        loss = get_loss(name)
        assert type(loss) is cls and loss.negatives == negatives
        assert (loss.kernel, loss.negatives) == SARE_SETTINGS[name]
    assert type(get_loss("triplet")) is TripletRankingLoss
    assert get_loss("triplet").margin == 0.1
    assert get_loss("Triplet", margin=0.3).margin == 0.3
    assert type(get_loss("contrastive")) is ContrastiveLoss
    assert get_loss("contrastive").margin == 0.7
    assert get_loss("SARE_IND_CAUCHY").negatives == "independent"


def test_registered_kernel_is_usable_by_name():
    # log k = -2 d^2 on y is the Gaussian kernel on sqrt(2) y: an independent check of the registry.
    losses.register_sare_kernel("gaussian-x2", lambda squared: -2.0 * squared)
    try:
        y_pred = random_unit_tuples(np.random.default_rng(6), 2, 3, 4)
        loss = SARELoss(kernel="gaussian-x2", dtype="float64")
        np.testing.assert_allclose(
            float(loss(None, y_pred)), batch_loss(math.sqrt(2) * y_pred, "sare-joint"), rtol=1e-12
        )
        assert loss.get_config()["kernel"] == "gaussian-x2"
    finally:
        del losses.SARE_KERNELS["gaussian-x2"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SARELoss(kernel="laplace"), "Unknown SARE kernel.*kernel='laplace'"),
        (lambda: SARELoss(negatives="both"), "negatives='both'"),
        (lambda: GaussianSARE(negatives="ind"), "negatives='ind'"),
        (lambda: TripletRankingLoss(margin=-0.1), "margin=-0.1"),
        (lambda: ContrastiveLoss(margin=0.0), "margin=0.0"),
        (lambda: get_loss("sare"), "Unknown loss.*name='sare'"),
        (lambda: get_loss("sare-joint", negatives="independent"), "fixes \\['negatives'\\]"),
        (lambda: get_loss("sare-joint-exp", kernel="cauchy"), "fixes \\['kernel'\\]"),
        (lambda: losses.register_sare_kernel("", abs), "non-empty"),
        (lambda: sare_loss(np.zeros((2, 3, 4)), negatives="all"), "negatives='all'"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("shape", [(4, 8), (2, 2, 8), (2, 3, 4, 1)])
def test_bad_y_pred_shapes_are_refused(name, shape):
    with pytest.raises(ValueError, match=re.escape(f"Received: y_pred.shape={shape}")):
        pure_loss_fn(name)(np.zeros(shape, "float32"))
