"""Models and images for the saliency tests: a tiny sare_tf model and planted-signal models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sare_tf.layers import NetVLAD
from sare_tf.models import build_embedding_model, feature_model

HEIGHT, WIDTH = 64, 96
# (top, bottom, left, right) in pixels, on the 4-pixel patch grid of the planted models.
BOX_A = (8, 40, 8, 40)
BOX_B = (28, 60, 56, 88)


def smooth_images(count: int, height: int = HEIGHT, width: int = WIDTH, seed: int = 0):
    """Blobby RGB images in [0, 255]: random 8x8 colour grids upsampled bicubically."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    grid = rng.uniform(0, 255, (count, 8, 8, 3)).astype("float32")
    images = tf.image.resize(grid, (height, width), method="bicubic").numpy()
    return np.clip(images, 0, 255).astype("float32")


def box_mask(box, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


def _initialise_netvlad(model, images):
    features = keras.ops.convert_to_numpy(feature_model(model)(images))
    features = features.reshape(-1, features.shape[-1])
    features = features[np.linalg.norm(features, axis=1) > 1e-6]
    model.get_layer("netvlad").initialize_from_descriptors(features, seed=0)


def build_planted_model(box, height: int = HEIGHT, width: int = WIDTH) -> keras.Model:
    """An embedding model whose descriptor depends on the pixels inside `box` only.

    The image is zeroed outside the box (after scaling to [-1, 1], so outside reads as mid
    grey), then cut into disjoint 4x4 patches by a stride-4 convolution followed by 1x1
    convolutions: every NetVLAD local descriptor sees one patch and nothing else, so neither
    the pixels outside the box nor a receptive-field margin around it can influence the
    descriptor. The last convolution ("features", linear as VGG16's conv5_3 in NetVLAD) feeds
    NetVLAD and is the default saliency target.
    """
    inputs = keras.Input((height, width, 3), name="image")
    inside = box_mask(box, height, width).astype("float32")[None, :, :, None]
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.Lambda(lambda t: t * inside, name="box_mask")(x)
    x = keras.layers.Conv2D(32, 4, strides=4, activation="relu", name="patches")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="mix")(x)
    x = keras.layers.Conv2D(32, 1, name="features")(x)
    descriptor = NetVLAD(8, name="netvlad")(x)
    return keras.Model(inputs, descriptor, name="planted")


@pytest.fixture(scope="session")
def planted_models():
    """`{"A": (model, box), "B": (model, box)}`, NetVLAD clustered on the models' features.

    Boxes are `(top, bottom, left, right)` pixel bounds in 64x96 images.
    """
    keras.utils.set_random_seed(1)
    models = {}
    for name, box in (("A", BOX_A), ("B", BOX_B)):
        model = build_planted_model(box)
        _initialise_netvlad(model, smooth_images(8, seed=10))
        models[name] = (model, box)
    return models


@pytest.fixture(scope="session")
def make_images():
    """`make_images(count, height=64, width=96, seed=0)`: blobby RGB float images in [0, 255]."""
    return smooth_images


@pytest.fixture(scope="session")
def tiny_model():
    """A sare_tf "tiny" embedding model (any input size), NetVLAD clustered on blob images."""
    keras.utils.set_random_seed(2)
    model = build_embedding_model("tiny", num_clusters=4, input_shape=(None, None, 3))
    _initialise_netvlad(model, smooth_images(4, seed=11))
    return model


@pytest.fixture(scope="session")
def images():
    """Three query-like images and three reference images, `[3, 64, 96, 3]` each."""
    return smooth_images(3, seed=0), smooth_images(3, seed=1)
