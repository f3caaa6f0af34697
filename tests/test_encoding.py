"""The shared encoder against direct per-image model calls."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sare_tf.data.images import resize_image
from sare_tf.encoding import encode, extract_descriptors, inference_function, same_size_batches
from sare_tf.model import build_embedding_model


def pil_pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def describe_one(model, image):
    return model(np.asarray(image, np.float32)[None], training=False).numpy()[0]


def test_fixed_size_batches_equal_per_image_model_calls(tiny_model, jpeg_folder):
    _, paths = jpeg_folder
    got = extract_descriptors(tiny_model, paths, image_size=(32, 40), batch_size=3, progress=False)
    expected = np.stack(
        [describe_one(tiny_model, resize_image(pil_pixels(p), (32, 40))) for p in paths]
    )
    assert got.dtype == np.float32 and got.shape == (8, 512)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_native_sizes_are_batched_by_size_in_input_order(tiny_model, jpeg_folder, tmp_path):
    _, paths = jpeg_folder
    out_path = tmp_path / "sub" / "descriptors.npy"
    got = extract_descriptors(tiny_model, paths, batch_size=2, out_path=out_path, progress=False)
    expected = np.stack([describe_one(tiny_model, pil_pixels(p)) for p in paths])
    assert isinstance(got, np.memmap)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(np.load(out_path), got)


def test_same_size_grouping_releases_early_when_too_many_images_wait():
    shapes = [(4, 4), (4, 6), (6, 4), (4, 4), (6, 6), (4, 6), (4, 4), (6, 6), (6, 4)]
    dataset = tf.data.Dataset.from_generator(
        lambda: ((i, np.zeros((*shape, 3), np.float32), True) for i, shape in enumerate(shapes)),
        output_signature=(
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([], tf.bool),
        ),
    )

    def groups(max_pending):
        batches = list(same_size_batches(dataset, batch_size=3, max_pending=max_pending))
        seen = np.concatenate([b[0] for b in batches])
        assert sorted(seen.tolist()) == list(range(len(shapes)))  # each image exactly once
        for batch_indices, images, ok in batches:
            assert all(tuple(images.shape[1:3]) == shapes[i] for i in batch_indices)
            assert ok.all() and len(batch_indices) <= 3
        return [sorted(b[0].tolist()) for b in batches]

    # Unbounded: the three (4, 4) images wait for each other and form one batch.
    assert [0, 3, 6] in groups(max_pending=100)
    # Bounded: after 4 waiting images the biggest group ([0, 3]) is released early.
    bounded = groups(max_pending=3)
    assert bounded[0] == [0, 3] and [0, 3, 6] not in bounded


def test_unreadable_files_are_skipped_counted_and_zeroed(tiny_model, jpeg_folder, tmp_path, caplog):
    _, paths = jpeg_folder
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not really a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    mixed = [paths[0], str(corrupt), paths[1], str(tmp_path / "missing.jpg"), str(empty)]
    for image_size in [(32, 32), None]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sare_tf.evaluation"):
            got, valid = extract_descriptors(
                tiny_model, mixed, image_size=image_size, progress=False, return_valid=True
            )
        assert valid.tolist() == [True, False, True, False, False]
        assert np.all(got[~valid] == 0.0)
        np.testing.assert_allclose(np.linalg.norm(got[valid], axis=1), 1.0, atol=1e-5)
        assert "3 of 5 images could not be read" in caplog.text and "corrupt.jpg" in caplog.text
    with pytest.raises(ValueError, match="None of the 2 images could be read"):
        extract_descriptors(
            tiny_model, [str(corrupt), str(empty)], image_size=(32, 32), progress=False
        )


def test_long_side_and_query_boxes(tiny_model, jpeg_folder):
    _, paths = jpeg_folder
    chosen = [paths[0], paths[1], paths[3]]  # 48x64, 64x48, 40x40
    boxes = [(8.4, 4.0, 40.0, 36.6), None, None]
    got = extract_descriptors(tiny_model, chosen, long_side=40, boxes=boxes, progress=False)
    first = pil_pixels(chosen[0])[4:37, 8:40]  # floor / ceil of the box: rows 4..36, cols 8..39
    assert first.shape == (33, 32, 3)  # already below 40: kept
    second = resize_image(pil_pixels(chosen[1]), (40, 30))  # 64x48 shrunk to long side 40
    third = pil_pixels(chosen[2])  # 40x40: unchanged
    expected = np.stack([describe_one(tiny_model, image) for image in (first, second, third)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_argument_validation(tiny_model, jpeg_folder):
    _, paths = jpeg_folder
    with pytest.raises(ValueError, match="image_size"):
        extract_descriptors(tiny_model, paths, image_size=(32,), progress=False)
    with pytest.raises(ValueError, match="boxes"):
        extract_descriptors(tiny_model, paths, boxes=[None], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_descriptors(tiny_model, paths, batch_size=0, progress=False)


def test_encode_returns_validity_and_takes_the_descriptor_models_image_size(
    tiny_model, jpeg_folder, tmp_path
):
    from sare_tf.artifacts import DescriptorModel

    _, paths = jpeg_folder
    missing = str(tmp_path / "missing.jpg")
    loaded = DescriptorModel(tiny_model, "tiny", None, "keras", image_size=(32, 40))
    descriptors, valid = encode(loaded, [*paths[:3], missing], progress=False)
    assert valid.tolist() == [True, True, True, False]
    expected = extract_descriptors(tiny_model, paths[:3], image_size=(32, 40), progress=False)
    np.testing.assert_allclose(descriptors[:3], expected, atol=1e-6)
    assert not descriptors[3].any()


def test_a_model_is_traced_once_for_every_encode_and_freed_with_its_function(jpeg_folder):
    _, paths = jpeg_folder
    model = build_embedding_model("tiny", num_clusters=4)
    encode(model, paths, image_size=(32, 48), progress=False)
    native, valid = encode(model, paths[:4], progress=False)  # three sizes
    traced = inference_function(model)
    assert traced.experimental_get_tracing_count() == 1  # both calls, every size: one trace
    assert valid.all()
    np.testing.assert_allclose(native[3], describe_one(model, pil_pixels(paths[3])), atol=1e-5)
    # A model nobody holds any more is freed, with its traced function.
    model_ref = weakref.ref(model)
    del model, traced
    gc.collect()
    assert model_ref() is None
