"""Sampling local descriptors from real JPEG files and initialising NetVLAD from them."""

from __future__ import annotations

import logging

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


@pytest.fixture
def bad_paths(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return [str(truncated), str(empty), str(tmp_path / "missing.jpg")]


def _locations(model, paths, image_size):
    from sare_tf.data.images import load_image

    images = np.stack([load_image(p, image_size).numpy() for p in paths])
    features = keras.ops.convert_to_numpy(feature_model(model)(images))
    return features.reshape(len(paths), -1, features.shape[-1])


def test_unreadable_images_are_skipped_and_counted(jpeg_paths, bad_paths, caplog):
    from sare_tf.data.checks import BadImageLog

    caplog.set_level(logging.INFO, logger="sare_tf")
    model = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    mixed = [bad_paths[0], *jpeg_paths[:3], bad_paths[1], jpeg_paths[3], bad_paths[2]]
    log = BadImageLog()
    samples = sample_local_descriptors(
        model, mixed, (32, 32), descriptors_per_image=5, batch_size=3, bad_images=log
    )
    assert samples.shape == (4 * 5, 128)  # the 4 readable images only
    assert log.count == 3 and set(log.files) == set(bad_paths)
    printed = caplog.text  # a library log line
    assert "skipped unreadable images" in printed and "missing.jpg" in printed

    # Each readable image gives exactly 5 distinct locations of its own map, nothing else.
    good = _locations(model, jpeg_paths[:4], (32, 32))
    owner = [int(np.argmin([((loc - s) ** 2).sum(-1).min() for loc in good])) for s in samples]
    assert np.bincount(owner, minlength=4).tolist() == [5, 5, 5, 5]
    for image_features, sample in zip(good[owner], samples, strict=True):
        assert ((image_features - sample) ** 2).sum(-1).min() < 1e-6


def test_unreadable_images_at_native_size(jpeg_paths, bad_paths):
    model = build_embedding_model("tiny", num_clusters=4)
    samples = sample_local_descriptors(
        model, [bad_paths[2], jpeg_paths[0]], None, descriptors_per_image=3, verbose=False
    )
    assert samples.shape == (3, 128)
    native = _locations(model, jpeg_paths[:1], None)[0]
    assert max(((native - s) ** 2).sum(-1).min() for s in samples) < 1e-6


def test_error_policy_and_all_bad_are_clear_errors(jpeg_paths, bad_paths):
    from sare_tf.data.images import BadImageError

    model = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    with pytest.raises(Exception, match="truncated.jpg") as raised:
        sample_local_descriptors(
            model, [jpeg_paths[0], bad_paths[0]], (32, 32), on_bad_image="error", verbose=False
        )
    assert isinstance(raised.value, BadImageError) or "truncated.jpg" in str(raised.value)
    with pytest.raises(ValueError, match="None of the 3 images .* could be read"):
        sample_local_descriptors(model, bad_paths, (32, 32), verbose=False)
