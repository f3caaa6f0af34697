"""The in-graph image decoder: encoded bytes to the pixels the Pillow reader gives.

`decode_like_pipeline` is the TensorFlow twin of `sare_tf.data.images.read_rgb` (Pillow): the
same RGB values for JPEG (accurate integer IDCT, reduced-scale decoding of large photos, EXIF
orientation), PNG (alpha composited over white, 16-bit gray scaled) and, decoded by TensorFlow,
GIF and BMP. It is the decoder of exported SavedModels (`serve_jpeg`) and of `load_image`, so that
a model reads a file the same way in training, evaluation and serving.
"""

from __future__ import annotations

import tensorflow as tf

# Leading bytes of the formats `tf.io.decode_image` reads (and `decode_rgb` documents).
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMAGE_SIGNATURES = (
    (_JPEG_MAGIC, "JPEG"),
    (_PNG_MAGIC, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def is_supported_image(contents: tf.Tensor) -> tf.Tensor:
    """Scalar bool tensor: do the encoded bytes start like a JPEG, PNG, GIF or BMP file?"""
    matches = [
        tf.equal(tf.strings.substr(contents, 0, len(magic)), magic)
        for magic, _ in _IMAGE_SIGNATURES
    ]
    return tf.reduce_any(tf.stack(matches))


def _draft_ratio_index(contents: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Branch 0..3 for the JPEG DCT scale 1, 2, 4, 8 that Pillow's `draft` picks for
    `sare_tf.data.images.read_rgb`: the largest one keeping the image at least
    `height x width` (scaling only starts when it is twice that size in both directions)."""
    shape = tf.io.extract_jpeg_shape(contents)
    fold = tf.minimum(shape[0] // height, shape[1] // width)
    return tf.reduce_sum(tf.cast(fold >= tf.constant([2, 4, 8]), tf.int32))


def _composite_over_white(rgba: tf.Tensor) -> tf.Tensor:
    """RGBA uint8 over an opaque white background, with Pillow's integer rounding
    (`Image.alpha_composite`), as `read_rgb` shows transparent images."""
    pixels = tf.cast(rgba, tf.int32)
    rgb, alpha = pixels[..., :3], pixels[..., 3:]
    blended = rgb * alpha + 255 * (255 - alpha) + 128
    return tf.cast(
        tf.bitwise.right_shift(tf.bitwise.right_shift(blended, 8) + blended, 8), tf.uint8
    )


def _decode_png_like_pillow(contents: tf.Tensor) -> tf.Tensor:
    """PNG bytes -> uint8 RGB as `read_rgb` makes them.

    Pillow composites over white only images with an alpha channel (colour types 4 and 6) and
    palette images with a `tRNS` chunk; it scales 16-bit grayscale by 1/257. Other PNGs are
    plain RGB: decoding them with 4 channels would be wrong, since TensorFlow fills the alpha
    of low-bit-depth palette images with 2^depth - 1 instead of 255.
    """
    # IHDR follows the 8-byte signature: length, "IHDR", width, height, bit depth, colour type.
    bit_depth = tf.strings.substr(contents, 24, 1)
    colour_type = tf.strings.substr(contents, 25, 1)
    # Chunks that apply to the image come before the first IDAT.
    header = tf.strings.split(contents, sep="IDAT", maxsplit=1)[0]
    has_trns = tf.size(tf.strings.split(header, sep="tRNS", maxsplit=1)) > 1
    has_alpha = tf.reduce_any(tf.equal(colour_type, [b"\x04", b"\x06"]))
    composite = has_alpha | (tf.equal(colour_type, b"\x03") & has_trns)
    gray16 = tf.equal(colour_type, b"\x00") & tf.equal(bit_depth, b"\x10")

    def with_alpha():
        return _composite_over_white(tf.io.decode_png(contents, channels=4, dtype=tf.uint8))

    def deep_gray():
        values = tf.cast(tf.io.decode_png(contents, channels=1, dtype=tf.uint16), tf.float32)
        return tf.image.grayscale_to_rgb(tf.cast(tf.round(values / 257.0), tf.uint8))

    def plain():
        return tf.io.decode_png(contents, channels=3, dtype=tf.uint8)

    return tf.case([(composite, with_alpha), (gray16, deep_gray)], default=plain, exclusive=False)


_EXIF_HEADER = b"Exif\x00\x00"
_MAX_JPEG_SEGMENTS = 32
_MAX_IFD_ENTRIES = 64


def _bytes_at(contents: tf.Tensor, position, count: int) -> tf.Tensor:
    """`count` bytes at `position` as int32 (zeros past the end)."""
    padded = tf.strings.join([contents, tf.constant(b"\x00" * 16)])
    position = tf.clip_by_value(position, 0, tf.strings.length(contents))
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, position, count), tf.uint8), tf.int32)


def _unsigned(contents, position, count: int, little_endian) -> tf.Tensor:
    values = _bytes_at(contents, position, count)
    weights = tf.constant([256**i for i in range(count)], tf.int32)
    return tf.where(
        little_endian, tf.reduce_sum(values * weights), tf.reduce_sum(values * weights[::-1])
    )


def jpeg_exif_orientation(contents: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8) of JPEG bytes, in-graph; 1 when there is none.

    Walks the JPEG segments to the APP1 "Exif" one (at most 32 segments, stopping at the start
    of scan), reads its TIFF header's byte order and first IFD, and looks for tag 0x0112 among
    at most 64 entries.
    """
    length = tf.strings.length(contents)

    def scanning(position, tiff, steps):
        marker = _bytes_at(contents, position, 2)
        return (
            (tiff < 0)
            & (steps < _MAX_JPEG_SEGMENTS)
            & (position + 4 <= length)
            & tf.equal(marker[0], 0xFF)
            & tf.not_equal(marker[1], 0xDA)
        )

    def next_segment(position, tiff, steps):
        marker = _bytes_at(contents, position, 2)
        is_exif = tf.equal(marker[1], 0xE1) & tf.equal(
            tf.strings.substr(tf.strings.join([contents, tf.constant(b"\x00" * 16)]),
                              tf.minimum(position + 4, length), 6),
            _EXIF_HEADER,
        )  # fmt: skip
        tiff = tf.where(is_exif, position + 10, tiff)
        size = _unsigned(contents, position + 2, 2, tf.constant(False))
        return position + 2 + size, tiff, steps + 1

    _, tiff, _ = tf.while_loop(
        scanning, next_segment, (tf.constant(2), tf.constant(-1), tf.constant(0))
    )

    def from_tiff():
        little = tf.equal(tf.strings.substr(contents, tf.minimum(tiff, length), 2), b"II")
        ifd = tiff + _unsigned(contents, tiff + 4, 4, little)
        count = tf.minimum(_unsigned(contents, ifd, 2, little), _MAX_IFD_ENTRIES)

        def body(i, found):
            entry = ifd + 2 + 12 * i
            tag = _unsigned(contents, entry, 2, little)
            value = _unsigned(contents, entry + 8, 2, little)
            return i + 1, tf.where(tf.equal(tag, 0x0112) & tf.equal(found, 0), value, found)

        _, found = tf.while_loop(
            lambda i, found: (i < count) & (ifd + 2 + 12 * i + 12 <= length),
            body,
            (tf.constant(0), tf.constant(0)),
        )
        return tf.where((found >= 1) & (found <= 8), found, 1)

    return tf.cond(tiff >= 0, from_tiff, lambda: tf.constant(1))


def apply_exif_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns `[H, W, C]` pixels upright as EXIF `orientation` says (Pillow's `exif_transpose`)."""
    branches = [
        lambda: image,  # 1
        lambda: tf.image.flip_left_right(image),  # 2
        lambda: tf.image.rot90(image, 2),  # 3
        lambda: tf.image.flip_up_down(image),  # 4
        lambda: tf.transpose(image, [1, 0, 2]),  # 5: transpose
        lambda: tf.image.rot90(image, 3),  # 6: 90 degrees clockwise
        lambda: tf.image.rot90(tf.transpose(image, [1, 0, 2]), 2),  # 7: transverse
        lambda: tf.image.rot90(image, 1),  # 8: 90 degrees counter-clockwise
    ]
    return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)


def decode_like_pipeline(contents: tf.Tensor, image_size=None) -> tf.Tensor:
    """Decodes image bytes to uint8 `[H, W, 3]` RGB with the pixels the training and
    evaluation pipeline gets from the same file (`sare_tf.data.images.read_rgb`, Pillow).

    JPEGs use the accurate integer DCT (Pillow's; TensorFlow's default fast DCT differs by up
    to ~6 levels) and the same reduced-scale decoding of large photos, and are turned upright by
    their EXIF orientation as `read_rgb` turns them (PNG eXIf chunks are not read here); PNGs are composited
    over white where Pillow does so. GIF and BMP use `tf.io.decode_image` (transparent GIF
    pixels are not composited over white as Pillow does).

    Args:
        contents: scalar string tensor, already checked by `is_supported_image`.
        image_size: `(height, width)` the image will be resized to (large JPEGs are then
            decoded at a reduced scale, as `read_rgb` does), or None.

    Returns:
        uint8 `[H, W, 3]`.
    """

    def jpeg():
        branches = [
            lambda ratio=ratio: tf.io.decode_jpeg(
                contents, channels=3, dct_method="INTEGER_ACCURATE", ratio=ratio
            )
            for ratio in (1, 2, 4, 8)
        ]
        # Phone photos: stored sideways with an EXIF orientation, read upright as read_rgb does
        # (whose reduced-scale rule then compares the stored, unturned sizes).
        orientation = jpeg_exif_orientation(contents)
        if image_size is None:
            ratio = tf.constant(0)
        else:
            height, width = image_size
            ratio = tf.cond(
                orientation >= 5,
                lambda: _draft_ratio_index(contents, width, height),
                lambda: _draft_ratio_index(contents, height, width),
            )
        return apply_exif_orientation(tf.switch_case(ratio, branches), orientation)

    def png():
        return _decode_png_like_pillow(contents)

    def other():
        return tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)

    is_jpeg = tf.equal(tf.strings.substr(contents, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    is_png = tf.equal(tf.strings.substr(contents, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    image = tf.cond(is_jpeg, jpeg, lambda: tf.cond(is_png, png, other))
    image.set_shape([None, None, 3])
    return image
