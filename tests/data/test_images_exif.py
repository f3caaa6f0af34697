"""EXIF orientation: phone photos are read upright, from files and from bytes alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sare_tf.data.images import BadImageError, decode_image_bytes, read_rgb


def _photo(orientation: int) -> tuple[bytes, np.ndarray]:
    """A 40x60 (h x w) picture, stored rotated as a camera would, with the EXIF tag to undo it."""
    rng = np.random.default_rng(orientation)
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:10, :20] = 255  # a white block in the top-left corner
    upright[30:, 50:, 1] = 200 + rng.integers(0, 10)
    # Store the pixels as a camera would: sensor-oriented, with the tag that turns them upright.
    stored = {1: upright, 6: np.rot90(upright, 1), 3: np.rot90(upright, 2), 8: np.rot90(upright, 3)}
    image = Image.fromarray(np.ascontiguousarray(stored[orientation]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    return buffer.getvalue(), upright


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_for_files_and_bytes(orientation, tmp_path):
    contents, upright = _photo(orientation)
    path = tmp_path / f"photo_{orientation}.png"
    path.write_bytes(contents)
    np.testing.assert_array_equal(read_rgb(path), upright)
    np.testing.assert_array_equal(decode_image_bytes(contents, "upload"), upright)


def test_bad_bytes_name_the_upload():
    with pytest.raises(BadImageError, match="upload 3.*not an image"):
        decode_image_bytes(b"hello, not a picture", "upload 3")
    with pytest.raises(BadImageError, match="empty"):
        decode_image_bytes(b"", "upload 4")
    contents, _ = _photo(1)
    with pytest.raises(BadImageError, match="more than the limit of 100"):
        decode_image_bytes(contents, "upload 5", max_pixels=100)
