"""The losses inside Keras: serialization, saving compiled models, and real `model.fit` runs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from loss_reference import ALL_NAMES, batch_loss, random_unit_tuples

from sare_tf.losses import CauchySARE, SARELoss, get_loss

NUM_NEGATIVES = 3
INPUT_DIM = 8


def tiny_tuple_model(embedding_dim=4):
    """`[B, 2+N, 8]` points -> `[B, 2+N, embedding_dim]` unit-norm embeddings."""
    inputs = keras.Input((2 + NUM_NEGATIVES, INPUT_DIM))
    embeddings = keras.layers.Dense(embedding_dim, name="embedding")(inputs)
    outputs = keras.layers.UnitNormalization(axis=-1, dtype="float32")(embeddings)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_config_round_trips_through_keras_serialization(name):
    loss = get_loss(name, name=f"my_{name.replace('-', '_')}")
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"].startswith("sare_tf>")
    restored = keras.losses.get(config)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y_pred = random_unit_tuples(np.random.default_rng(31), 3, NUM_NEGATIVES, 4).astype("float32")
    assert float(restored(None, y_pred)) == float(loss(None, y_pred))


def test_sareloss_from_a_kernel_string_and_from_a_config_dict():
    y_pred = random_unit_tuples(np.random.default_rng(32), 3, NUM_NEGATIVES, 4).astype("float32")
    by_argument = SARELoss(kernel="cauchy")
    by_config = keras.losses.get(
        {"class_name": "sare_tf>SARELoss", "config": {"kernel": "cauchy", "negatives": "joint"}}
    )
    assert isinstance(by_config, SARELoss) and by_config.kernel == "cauchy"
    expected = batch_loss(y_pred, "sare-joint-cauchy")
    for loss in (by_argument, by_config, CauchySARE()):
        np.testing.assert_allclose(float(loss(None, y_pred)), expected, rtol=2e-6)
    float64_loss = SARELoss.from_config({**by_argument.get_config(), "dtype": "float64"})
    assert float64_loss.dtype == "float64"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_compiled_model_saves_and_reloads_with_its_loss(name, tmp_path):
    model = tiny_tuple_model()
    loss = get_loss(name)
    model.compile(optimizer="sgd", loss=loss)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    x = np.random.default_rng(33).normal(size=(4, 2 + NUM_NEGATIVES, INPUT_DIM)).astype("float32")
    embeddings = keras.ops.convert_to_numpy(reloaded(x))
    np.testing.assert_allclose(embeddings, keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    np.testing.assert_allclose(
        float(reloaded.loss(None, embeddings)), batch_loss(embeddings, name), rtol=2e-6
    )


def toy_tuples(rng, num_tuples=32, num_places=8):
    """Tuples of noisy points around `num_places` separated centres: a real positive per query.

    The query and positive are two samples of the same place, the negatives samples of other
    places, so an embedding that separates places drives every loss down.
    """
    centres = rng.normal(size=(num_places, INPUT_DIM))
    places = rng.integers(num_places, size=num_tuples)
    tuples = np.empty((num_tuples, 2 + NUM_NEGATIVES, INPUT_DIM), "float32")
    for index, place in enumerate(places):
        others = rng.choice(np.delete(np.arange(num_places), place), size=NUM_NEGATIVES)
        members = [place, place, *others]
        tuples[index] = centres[members] + 0.4 * rng.normal(size=(len(members), INPUT_DIM))
    return tuples


class StepLosses(keras.callbacks.Callback):
    """Per-step training losses, recovered from the running epoch mean Keras logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.losses, self._total = [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        total = logs["loss"] * (batch + 1)
        self.losses.append(total - self._total)
        self._total = total


def ranking_accuracy(embeddings):
    """Fraction of (tuple, negative) pairs with the positive closer to the query."""
    embeddings = np.asarray(embeddings, "float64")
    positive_sq = np.sum((embeddings[:, 0] - embeddings[:, 1]) ** 2, axis=-1)
    negatives_sq = np.sum((embeddings[:, :1] - embeddings[:, 2:]) ** 2, axis=-1)
    return float(np.mean(positive_sq[:, None] < negatives_sq))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_model_fit_decreases_each_loss_on_a_toy_problem(name):
    model = tiny_tuple_model()
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=get_loss(name))
    x = toy_tuples(np.random.default_rng(34))
    initial = keras.ops.convert_to_numpy(model(x))
    steps = 10
    recorder = StepLosses()
    # One epoch of `steps` full-batch steps over the same tuples (faster than `steps` epochs).
    model.fit(
        np.concatenate([x] * steps),
        np.zeros(steps * len(x)),
        batch_size=len(x),
        shuffle=False,
        epochs=1,
        verbose=0,
        callbacks=[recorder],
    )
    losses = recorder.losses
    assert len(losses) == steps and np.all(np.isfinite(losses)), losses
    # The first step is a real training step on random points, with the loss of the formula.
    np.testing.assert_allclose(losses[0], batch_loss(initial, name), rtol=1e-4)
    assert losses[-1] < 0.9 * losses[0], losses
    trained = keras.ops.convert_to_numpy(model(x))
    assert ranking_accuracy(trained) >= max(0.95, ranking_accuracy(initial)), (
        ranking_accuracy(initial),
        ranking_accuracy(trained),
    )


def test_fit_without_targets_and_under_mixed_bfloat16():
    # y_true is ignored, so a dataset of images alone is enough; the bfloat16 embeddings are
    # upcast and the loss is computed in float32.
    keras.config.set_dtype_policy("mixed_bfloat16")
    inputs = keras.Input((2 + NUM_NEGATIVES, INPUT_DIM))
    outputs = keras.layers.UnitNormalization(axis=-1)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, outputs)
    assert model.output.dtype == "bfloat16"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=get_loss("sare-joint"))
    x = toy_tuples(np.random.default_rng(35))
    recorder = StepLosses()
    model.fit(
        np.concatenate([x] * 6), batch_size=len(x), shuffle=False, verbose=0, callbacks=[recorder]
    )
    losses = recorder.losses
    assert len(losses) == 6 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
