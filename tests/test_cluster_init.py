"""Sampling local descriptors from real JPEG files and initialising NetVLAD from them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from sare_tf.cluster_init import initialize_netvlad, sample_local_descriptors
from sare_tf.models import build_embedding_model, feature_model, netvlad_layer


@pytest.fixture
def jpeg_paths(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        pixels = rng.integers(0, 256, size=(40 + 4 * i, 56, 3), dtype=np.uint8)
        path = tmp_path / f"image_{i}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(str(path))
    return paths


def test_samples_are_rows_of_the_feature_maps(jpeg_paths):
    model = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    samples = sample_local_descriptors(
        model,
        jpeg_paths,
        (32, 32),
        descriptors_per_image=5,
        max_images=4,
        batch_size=3,
        seed=1,
        verbose=False,
    )
    assert samples.shape == (4 * 5, 128) and samples.dtype == np.float32
    again = sample_local_descriptors(
        model,
        jpeg_paths,
        (32, 32),
        descriptors_per_image=5,
        max_images=4,
        batch_size=2,
        seed=1,
        verbose=False,
    )
    np.testing.assert_allclose(samples, again, atol=1e-5)  # seeded, independent of batching

    # Every sample is one location of one image's feature map.
    from sare_tf.data.images import load_image

    images = np.stack([load_image(p, (32, 32)).numpy() for p in jpeg_paths])
    all_locations = keras.ops.convert_to_numpy(feature_model(model)(images)).reshape(-1, 128)
    distances = ((samples[:, None, :] - all_locations[None, :, :]) ** 2).sum(-1)
    assert distances.min(axis=1).max() < 1e-6


def test_small_maps_keep_every_location(jpeg_paths):
    model = build_embedding_model("tiny", num_clusters=4, input_shape=(16, 16, 3))  # 2x2 maps
    samples = sample_local_descriptors(
        model, jpeg_paths, (16, 16), descriptors_per_image=100, verbose=False
    )
    assert samples.shape == (7 * 4, 128)


def test_initialize_netvlad_sets_the_layer(jpeg_paths):
    model = build_embedding_model("tiny", num_clusters=3, input_shape=(32, 32, 3))
    assert not netvlad_layer(model).is_initialized
    alpha = initialize_netvlad(model, jpeg_paths, (32, 32), descriptors_per_image=10, verbose=False)
    assert alpha > 0 and netvlad_layer(model).is_initialized


def test_no_images_is_a_clear_error():
    model = build_embedding_model("tiny", num_clusters=3, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="No images"):
        sample_local_descriptors(model, [], (32, 32))
