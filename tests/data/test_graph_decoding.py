"""The in-graph decoder (serve_jpeg, load_image) turns phone photos upright by their EXIF orientation, as the training reader does."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sare_tf.data.images import read_rgb
from sare_tf.data.graph_decoding import decode_like_pipeline, jpeg_exif_orientation


def _jpeg_with_orientation(orientation, size=(40, 56), seed=0, with_jfif=True) -> bytes:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.random((size[0] // 8, size[1] // 8, 3)), np.ones((8, 8, 1))) * 255
    image = Image.fromarray(smooth.astype(np.uint8))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010F] = "sare_tf test camera"  # another tag before it in the IFD
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8])
def test_in_graph_orientation_equals_pillows(orientation, tmp_path):
    contents = _jpeg_with_orientation(orientation, seed=orientation or 0)
    assert int(jpeg_exif_orientation(tf.constant(contents))) == (orientation or 1)
    path = tmp_path / "photo.jpg"
    path.write_bytes(contents)
    for size in ((40, 56), (16, 16)):  # native scale, and reduced-scale decoding of a large photo
        got = decode_like_pipeline(tf.constant(contents), size).numpy()
        np.testing.assert_array_equal(got, read_rgb(path, size))


def test_no_exif_and_non_jpeg_bytes_give_orientation_one():
    plain = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain, format="JPEG")
    assert int(jpeg_exif_orientation(tf.constant(plain.getvalue()))) == 1
    assert int(jpeg_exif_orientation(tf.constant(b"\xff\xd8\xff\xe1\x00"))) == 1  # truncated
    assert int(jpeg_exif_orientation(tf.constant(b"not an image"))) == 1
