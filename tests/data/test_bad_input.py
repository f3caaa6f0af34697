"""Bad input: every kind of awkward file is decoded to RGB or reported with its path, never a crash."""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sare_tf.cli import main as cli_main
from sare_tf.data import GeoDataset, write_dbstruct
from sare_tf.data.checks import BadImageLog, check_images
from sare_tf.data.images import BadImageError, load_image, read_rgb, safe_load_image

SIZE = (12, 16)


def _gradient_rgb(height=24, width=32):
    """A smooth RGB image (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 90)], -1
    ).astype(np.uint8)


def _png_rgb16(path, pixels16, claimed_size=None):
    """Writes a 48-bit RGB PNG by hand (Pillow cannot write one): chunks per the PNG spec.

    `claimed_size=(width, height)` writes a header that lies about the size (a "bomb").
    """
    height, width, _ = pixels16.shape
    raw = b"".join(b"\x00" + pixels16[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", *(claimed_size or (width, height)), 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# ---- files that are images: decoded to RGB, checked against independent expectations ----


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(np.full((20, 30), 77, np.uint8), mode="L").save(path, quality=95)
    pixels = read_rgb(path)
    assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8
    np.testing.assert_allclose(pixels, 77, atol=2)
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_png_rgb_and_rgba_are_exact(tmp_path):
    rgb = _gradient_rgb()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgb.png"), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel: shown over white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = read_rgb(tmp_path / "rgba.png")
    np.testing.assert_array_equal(got[1:], rgb[1:])
    assert got[0, 0].tolist() == [255, 255, 255]


def test_palette_png(tmp_path):
    image = Image.fromarray(_gradient_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.save(tmp_path / "palette.png")
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(read_rgb(tmp_path / "palette.png"), expected)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (50, 100, 200, 0)).save(path, quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
    # With K = 0 every CMYK -> RGB formula agrees: 255 - C, 255 - M, 255 - Y.
    np.testing.assert_allclose(read_rgb(path), np.broadcast_to([205, 155, 55], (16, 16, 3)), atol=3)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 10, 40000, 65535]], np.uint16).repeat(3, axis=0)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as image:
        assert image.mode.startswith("I")
    got = read_rgb(tmp_path / "gray16.png")
    expected = np.round(values / 257.0)  # 16-bit full scale to 8-bit full scale
    np.testing.assert_array_equal(got[..., 1], expected)


def test_16_bit_rgb_png(tmp_path):
    values = np.zeros((4, 5, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 2570
    _png_rgb16(tmp_path / "rgb16.png", values)
    np.testing.assert_allclose(
        read_rgb(tmp_path / "rgb16.png"), np.broadcast_to([255, 128, 10], (4, 5, 3)), atol=1
    )


def test_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "huge.jpg"
    pixels = np.asarray(Image.fromarray(_gradient_rgb()).resize((4000, 3000), Image.BILINEAR))
    Image.fromarray(pixels).save(path, quality=90)
    with Image.open(path) as image:
        assert image.size == (4000, 3000)
    reduced = read_rgb(path, image_size=(120, 160))
    assert reduced.shape == (375, 500, 3)  # 1/8 scale decode: still >= the target size
    image, ok = safe_load_image(str(path), (120, 160))
    reference = tf.image.resize(pixels.astype(np.float32), (120, 160), antialias=True).numpy()
    assert bool(ok) and image.shape == (120, 160, 3)
    assert np.abs(image.numpy() - reference).mean() < 2.0


# ---- files that are not usable images: reported with their path, never raised in tf.data ----


def _make_bad(kind, tmp_path):
    path = tmp_path / f"{kind}.jpg"
    if kind == "missing":
        return path, "file not found"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "truncated":
        Image.fromarray(_gradient_rgb(96, 128)).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated"
    if kind == "not_an_image":
        path.write_text("id,utm_east,utm_north\nthis is a CSV file, not a JPEG\n")
        return path, "not an image file"
    if kind == "folder":
        path.mkdir()
        return path, "is a folder"
    if kind == "too_many_pixels":
        # A PNG header claiming 100000 x 100000 pixels: refused before any decoding.
        path = tmp_path / "bomb.png"
        _png_rgb16(path, np.zeros((1, 1, 3), np.uint16), claimed_size=(100000, 100000))
        return path, "100000x100000 pixels|too many pixels"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "empty", "truncated", "not_an_image", "folder", "too_many_pixels"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_is_reported_with_its_path(kind, tmp_path):
    path, reason = _make_bad(kind, tmp_path)
    with pytest.raises(BadImageError, match=reason) as info:
        read_rgb(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)

    # Inside tf.data: no exception, a blank image, ok=False, and the log has path and reason.
    log = BadImageLog()
    good = tmp_path / "good.png"
    Image.fromarray(_gradient_rgb(12, 16)).save(good)
    dataset = tf.data.Dataset.from_tensor_slices([str(good), str(path)]).map(
        lambda p: safe_load_image(p, SIZE, log), num_parallel_calls=2
    )
    (image_good, ok_good), (image_bad, ok_bad) = list(dataset)
    assert bool(ok_good) and not bool(ok_bad)
    assert image_bad.shape == (*SIZE, 3) and float(tf.reduce_max(image_bad)) == 0.0
    assert log.count == 1 and re.search(reason, log.files[str(path)])

    report = check_images([str(good), str(path)], num_workers=2)
    assert not report.ok and list(report.bad) == [str(path)]
    assert re.search(reason, report.bad[str(path)])
    assert str(path) in report.summary()
    with pytest.raises(ValueError, match=str(path.name)):
        report.raise_if_bad()


def test_error_policy_stops_with_the_path(tmp_path):
    path, _ = _make_bad("truncated", tmp_path)
    log = BadImageLog("error")
    dataset = tf.data.Dataset.from_tensors(str(path)).map(lambda p: safe_load_image(p, SIZE, log))
    with pytest.raises(tf.errors.OpError, match="truncated.jpg"):
        list(dataset)
    with pytest.raises(ValueError, match="Unknown bad-image policy"):
        BadImageLog("ignore")


def test_check_images_counts_conversions(tmp_path):
    Image.fromarray(np.full((8, 8), 10, np.uint8)).save(tmp_path / "g.png")
    Image.new("CMYK", (8, 8), (1, 2, 3, 4)).save(tmp_path / "c.jpg")
    Image.fromarray(_gradient_rgb()).save(tmp_path / "r.jpg")
    report = check_images([str(tmp_path / n) for n in ("g.png", "c.jpg", "r.jpg")])
    assert report.ok and report.num_checked == 3
    assert report.converted == {"L": 1, "CMYK": 1}
    assert report.formats == {"PNG": 1, "JPEG": 2}


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "gray.jpg"])
def test_tf_load_image_agrees_with_safe_path(tmp_path, name):
    # Training (Pillow decode) and evaluation (TensorFlow decode) must see the same pixels.
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, (x * y) % 256], -1).astype(np.uint8)
    image = Image.fromarray(rgb).convert("L" if name.startswith("gray") else "RGB")
    image.save(tmp_path / name, quality=80)
    fast = load_image(str(tmp_path / name), (40, 50)).numpy()
    safe, ok = safe_load_image(str(tmp_path / name), (40, 50))
    assert bool(ok)
    np.testing.assert_allclose(fast, safe.numpy(), atol=1e-3)
    # 4x smaller: a JPEG is decoded at 1/4 scale (draft) instead of resized: close, not equal.
    fast = load_image(str(tmp_path / name), SIZE).numpy()
    safe, ok = safe_load_image(str(tmp_path / name), SIZE)
    assert np.abs(fast - safe.numpy()).mean() < 8.0  # the blue channel is a fine pattern
    if name.endswith(".png"):
        np.testing.assert_allclose(fast, safe.numpy(), atol=1e-3)


def test_check_data_command(tmp_path, capsys):
    Image.fromarray(_gradient_rgb()).save(tmp_path / "db0.jpg")
    Image.fromarray(np.full((8, 8), 10, np.uint16)).save(tmp_path / "db1.png")
    _make_bad("truncated", tmp_path)
    dataset = GeoDataset(
        ["db0.jpg", "db1.png", "truncated.jpg", "missing.jpg"],
        [[0, 0], [5, 0], [10, 0], [300, 0]],
        ["db0.jpg", "db1.png"],
        [[1, 0], [500, 0]],
    )
    mat = write_dbstruct(tmp_path / "set.mat", dataset, "test")
    assert cli_main(["check-data", mat]) == 1
    out = capsys.readouterr().out
    assert "2 bad" in out and "truncated.jpg" in out and "missing.jpg: file not found" in out
    assert "1 queries have no training positive (within 10 m)" in out
    assert cli_main(["check-data", mat, "--skip-images"]) == 0

    (tmp_path / "broken.mat").write_text("not matlab")
    assert cli_main(["check-data", str(tmp_path / "broken.mat")]) == 2
    assert "broken.mat" in capsys.readouterr().err
