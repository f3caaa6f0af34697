"""Embedding and tuple models: shapes, the linear conv5_3 crop, freezing, gradients, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.convert.vgg16_netvlad import VGG16_CONVS
from sare_tf.layers import Conv2D
from sare_tf.models import (
    BACKBONES,
    build_embedding_model,
    build_tuple_model,
    feature_model,
    fit_pca_whitening_layer,
    netvlad_layer,
)


@pytest.fixture(scope="module")
def vgg16_model():
    keras.config.set_dtype_policy("float32")
    return build_embedding_model("vgg16", num_clusters=4, input_shape=(48, 64, 3))


def _images(count, height=48, width=64, seed=0):
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, size=(count, height, width, 3))
        .astype("float32")
    )


def test_vgg16_output_dims_and_unit_norm(vgg16_model):
    assert vgg16_model.output_shape == (None, 512 * 4)
    descriptors = keras.ops.convert_to_numpy(vgg16_model(_images(2)))
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_vgg16_conv5_3_is_linear(vgg16_model):
    assert vgg16_model.get_layer("block5_conv3").get_config()["activation"] == "linear"
    features = keras.ops.convert_to_numpy(feature_model(vgg16_model)(_images(2)))
    assert features.shape == (2, 3, 4, 512)
    assert features.min() < 0  # a ReLU output would have none
    # conv5_2 keeps its ReLU.
    assert vgg16_model.get_layer("block5_conv2").get_config()["activation"] == "relu"


def test_vgg16_only_block5_and_netvlad_trainable_by_default(vgg16_model):
    trainable = {layer.name for layer in vgg16_model.layers if layer.trainable and layer.weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3", "netvlad"}


def test_gradients_reach_trainable_layers_and_frozen_layers_do_not_move(vgg16_model):
    images = _images(2, seed=1)
    target = np.random.default_rng(2).normal(size=(2, 2048)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(vgg16_model(images, training=True) * target)
    variables = vgg16_model.trainable_variables
    gradients = tape.gradient(loss, variables)
    names = {v.path.split("/")[0] for v in variables}
    assert names == {"block5_conv1", "block5_conv2", "block5_conv3", "netvlad"}
    for variable, gradient in zip(variables, gradients, strict=True):
        assert gradient is not None, variable.path
        assert float(tf.reduce_max(tf.abs(gradient))) > 0, variable.path

    frozen_before = [w.numpy().copy() for w in vgg16_model.get_layer("block4_conv3").weights]
    trained_before = vgg16_model.get_layer("block5_conv3").kernel.numpy().copy()
    keras.optimizers.SGD(learning_rate=0.1).apply(gradients, variables)
    for before, after in zip(
        frozen_before, vgg16_model.get_layer("block4_conv3").weights, strict=True
    ):
        np.testing.assert_array_equal(before, after.numpy())
    assert not np.array_equal(trained_before, vgg16_model.get_layer("block5_conv3").kernel.numpy())


def test_vgg16_holds_keras_weights_in_sare_tf_convolutions(tmp_path):
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(48, 64, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    reference.save_weights(path)
    model = build_embedding_model(
        "vgg16", num_clusters=4, weights=str(path), input_shape=(48, 64, 3)
    )
    for name in VGG16_CONVS:
        assert type(model.get_layer(name)) is Conv2D, name
        for ours, theirs in zip(
            model.get_layer(name).weights, reference.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    images = _images(2, seed=4)
    conv5_3 = keras.Model(reference.input, reference.get_layer("block5_conv3").output)
    expected = conv5_3(keras.applications.vgg16.preprocess_input(images.copy()))
    features = feature_model(model)(images)
    # Keras' conv5_3 has its ReLU, the cropped backbone's has not.
    np.testing.assert_allclose(np.maximum(features, 0), expected, rtol=1e-4, atol=1e-3)


def test_tuple_model_shape_and_equivalence(vgg16_model):
    tuple_model = build_tuple_model(vgg16_model, num_negatives=3)
    tuples = _images(2 * 5, seed=3).reshape(2, 5, 48, 64, 3)
    output = keras.ops.convert_to_numpy(tuple_model(tuples))
    assert output.shape == (2, 5, 2048)
    direct = keras.ops.convert_to_numpy(vgg16_model(tuples.reshape(10, 48, 64, 3)))
    np.testing.assert_allclose(output.reshape(10, 2048), direct, atol=1e-5)


def test_keras_round_trip_of_embedding_and_tuple_models(tmp_path):
    model = build_embedding_model("tiny", num_clusters=3, input_shape=(32, 32, 3))
    netvlad_layer(model).set_centroids(np.random.default_rng(0).normal(size=(3, 128)), alpha=5.0)
    tuple_model = build_tuple_model(model, num_negatives=2)
    tuples = _images(8, 32, 32).reshape(2, 4, 32, 32, 3)
    expected = keras.ops.convert_to_numpy(tuple_model(tuples))
    tuple_model.save(tmp_path / "tuple.keras")
    reloaded = keras.models.load_model(tmp_path / "tuple.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(tuples)), expected)
    assert netvlad_layer(reloaded).is_initialized


def test_pca_dim_and_fit():
    model = build_embedding_model("tiny", num_clusters=2, pca_dim=16, input_shape=(32, 32, 3))
    assert model.output_shape == (None, 16)
    assert not model.get_layer("pca_whitening").trainable
    fit_pca_whitening_layer(model, np.random.default_rng(0).normal(size=(100, 256)))
    descriptors = keras.ops.convert_to_numpy(model(_images(3, 32, 32)))
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_keras_resnet50_backbone_is_cropped_after_conv4():
    spec = BACKBONES["keras-resnet50"]
    model = build_embedding_model("keras-resnet50", num_clusters=2, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 2 * spec.channels)
    assert feature_model(model).output_shape == (None, 4, 4, 1024)
    assert "conv5_block1_1_conv" not in {layer.name for layer in model.layers}
    assert model.get_layer("conv4_block1_1_conv").trainable
    assert not model.get_layer("conv3_block4_out").trainable


def test_trainable_from_none_trains_everything_and_bad_names_fail():
    model = build_embedding_model(
        "tiny", num_clusters=2, trainable_from=None, input_shape=(32, 32, 3)
    )
    assert all(layer.trainable for layer in model.layers if layer.weights)
    with pytest.raises(ValueError, match="trainable_from"):
        build_embedding_model("tiny", num_clusters=2, trainable_from="no_such_layer")
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_embedding_model("alexnet")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        build_embedding_model("tiny", weights="missing.weights.h5")


def test_local_weights_file_is_loaded(tmp_path):
    source = build_embedding_model("tiny", num_clusters=2, input_shape=(32, 32, 3))
    backbone = keras.Model(source.input, feature_model(source).output)
    # Weights of the cropped backbone alone, as a user would save them.
    tiny = keras.Model(source.get_layer("preprocess").output, backbone.output)
    path = tmp_path / "tiny.weights.h5"
    tiny.save_weights(path)
    loaded = build_embedding_model(
        "tiny", num_clusters=2, weights=str(path), input_shape=(32, 32, 3)
    )
    np.testing.assert_array_equal(
        loaded.get_layer("block4_conv2_linear").kernel.numpy(),
        source.get_layer("block4_conv2_linear").kernel.numpy(),
    )


def test_mixed_bfloat16_model_gives_float32_descriptors_close_to_float32():
    reference = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    netvlad_layer(reference).set_centroids(
        np.random.default_rng(1).normal(size=(4, 128)), alpha=5.0
    )
    images = _images(4, 32, 32)
    expected = keras.ops.convert_to_numpy(reference(images))
    keras.config.set_dtype_policy("mixed_bfloat16")
    half = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    half.set_weights(reference.get_weights())
    assert half.get_layer("block1_conv1").compute_dtype == "bfloat16"
    output = half(images)
    assert output.dtype == "float32"
    cosine = np.sum(keras.ops.convert_to_numpy(output) * expected, axis=1)
    assert np.all(cosine > 0.99), cosine
