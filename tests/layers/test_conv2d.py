"""Conv2D's training gradient: the input gradient of stride-1 convolutions as a forward
convolution, equal to TensorFlow's autodiff; every other convolution untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.layers import Conv2D
from sare_tf.layers.conv2d import STRIDE1_CONVOLUTIONS


def _gradients(convolve, inputs, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([inputs, kernel])
        outputs = convolve(inputs, kernel)
        loss = tf.reduce_sum(outputs * upstream)
    return (outputs, *tape.gradient(loss, [inputs, kernel]))


@pytest.mark.parametrize(
    "padding, kernel_size",
    [("SAME", 3), ("SAME", 1), ("SAME", 5), ("VALID", 3), ("VALID", 2), ("VALID", 1)],
)
def test_input_and_kernel_gradients_equal_autodiff_in_float64(padding, kernel_size):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(2, 7, 6, 5)))
    kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, 5, 4)))
    out_height = 7 if padding == "SAME" else 8 - kernel_size
    out_width = 6 if padding == "SAME" else 7 - kernel_size
    upstream = tf.constant(rng.normal(size=(2, out_height, out_width, 4)))
    want = _gradients(lambda x, k: tf.nn.conv2d(x, k, 1, padding), inputs, kernel, upstream)
    got = _gradients(STRIDE1_CONVOLUTIONS[padding], inputs, kernel, upstream)
    for name, a, b in zip(("outputs", "d_inputs", "d_kernel"), got, want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10, err_msg=name)


def _traced_gradient_ops(layer, inputs, training):
    @tf.function
    def gradient(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.square(layer(inputs, training=training)))
        return tape.gradient(loss, [inputs, *layer.trainable_variables])

    graph = gradient.get_concrete_function(inputs).graph
    return gradient(inputs), {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(
    "settings, fast",
    [
        (dict(kernel_size=3, padding="same"), True),
        (dict(kernel_size=3, padding="valid"), True),
        (dict(kernel_size=1), True),
        (dict(kernel_size=3, strides=2, padding="same"), False),
        (dict(kernel_size=2, padding="same"), False),  # SAME pads an even kernel unevenly
        (dict(kernel_size=3, padding="same", dilation_rate=2), False),
    ],
)
def test_the_layer_trains_with_keras_gradients_and_keeps_its_config(settings, fast):
    inputs = tf.constant(np.random.default_rng(1).normal(size=(3, 9, 8, 6)).astype("float32"))
    ours, theirs = Conv2D(5, **settings), keras.layers.Conv2D(5, **settings)
    ours.build(inputs.shape)
    theirs.build(inputs.shape)
    theirs.set_weights(ours.get_weights())
    (got, got_ops), (want, _) = (
        _traced_gradient_ops(ours, inputs, training=True),
        _traced_gradient_ops(theirs, inputs, training=True),
    )
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    assert ("Conv2DBackpropInput" not in got_ops) == fast
    # Inference (and so every export) keeps TensorFlow's own gradient and plain ops.
    _, inference_ops = _traced_gradient_ops(ours, inputs, training=False)
    assert "Conv2DBackpropInput" in inference_ops
    np.testing.assert_allclose(ours(inputs, training=True), theirs(inputs), atol=1e-6)
    assert Conv2D.from_config(ours.get_config()).get_config() == ours.get_config()


def test_a_frozen_layer_keeps_kerass_op_and_its_input_gradient():
    inputs = tf.constant(np.random.default_rng(3).normal(size=(2, 6, 5, 4)).astype("float32"))
    ours, theirs = Conv2D(3, 3, padding="same"), keras.layers.Conv2D(3, 3, padding="same")
    ours.build(inputs.shape)
    theirs.build(inputs.shape)
    theirs.set_weights(ours.get_weights())
    ours.trainable = theirs.trainable = False
    (got, got_ops), (want, _) = (
        _traced_gradient_ops(ours, inputs, training=True),
        _traced_gradient_ops(theirs, inputs, training=True),
    )
    assert "Conv2DBackpropInput" in got_ops and len(got) == 1  # no trainable variables
    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), rtol=1e-5, atol=1e-5)


def test_models_saved_with_either_layer_load_the_others_weights(tmp_path):
    inputs = keras.Input((8, 8, 3))
    ours = keras.Model(inputs, Conv2D(4, 3, padding="same", name="conv")(inputs))
    ours.save_weights(tmp_path / "ours.weights.h5")
    theirs = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    theirs.load_weights(tmp_path / "ours.weights.h5")
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(theirs(images), ours(images), atol=1e-6)
    ours.save(tmp_path / "ours.keras")
    loaded = keras.saving.load_model(tmp_path / "ours.keras")
    assert type(loaded.get_layer("conv")) is Conv2D
