"""The serving graph of an embedding model, written as a self-contained SavedModel.

Two signatures, both returning `{"descriptor": float32 [B, D]}` exactly as the Keras model
computes it (preprocessing, backbone, NetVLAD, optional PCA whitening and L2 normalisation
are all inside the graph):

- `serving_default`: `image`, float32 `[B, H, W, 3]` RGB in [0, 255], run as sent (a model
  built for a fixed size refuses other sizes, as the Keras model does).
- `serve_jpeg`: `image_bytes`, string `[B]` of encoded JPEG / PNG (GIF, BMP) files, decoded
  to the same RGB pixels the training and evaluation input pipelines read from those files
  (`sare_tf.data.images.read_rgb`) and resized with the same op (`resize_image`) to the
  model's image size.

The graph is traced through `keras.export.ExportArchive`, so the SavedModel holds only
TensorFlow ops and variables: it loads with `tf.saved_model.load`, `saved_model_cli` and TF
Serving without sare_tf or Keras.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sare_tf.data.images import resize_image
from sare_tf.models import embedding_of

SERVING_DEFAULT = "serving_default"
SERVE_JPEG = "serve_jpeg"
IMAGE_INPUT = "image"
# TF Serving's REST API base64-decodes `{"b64": ...}` values; the `_bytes` suffix also marks
# the tensor as binary in its JSON mapping.
BYTES_INPUT = "image_bytes"
DESCRIPTOR_OUTPUT = "descriptor"

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
_FORMAT_NAMES = "JPEG, PNG, GIF or BMP"


def serving_model(model: keras.Model) -> keras.Model:
    """Returns the image -> descriptor model to serve, checking its inputs and outputs.

    A tuple model (`[B, 2+N, H, W, 3]` input, as trained) is unwrapped to the embedding model
    inside it.

    Args:
        model: an embedding model or a tuple model wrapping one.

    Returns:
        A model with one `[B, H, W, 3]` input and one `[B, D]` output, D known.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Only models with one image input and one descriptor output can be exported. "
            f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs in {model.name!r}"
        )
    if len(model.inputs[0].shape) == 5:
        model = embedding_of(model)
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            "The exported model must take RGB images [B, H, W, 3]. "
            f"Received: input_shape={input_shape} of {model.name!r}"
        )
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(
            "The exported model must return descriptors [B, D] with D known. "
            f"Received: output_shape={output_shape} of {model.name!r}"
        )
    return model


def resolve_image_size(model: keras.Model, image_size=None) -> tuple[int, int]:
    """The `(height, width)` that `serve_jpeg` resizes decoded images to.

    The size asked for, else the size the model records (`sare_tf.descriptor_model`); one of
    the two is required.
    """
    from sare_tf.descriptor_model import resolve_image_size as resolve

    return resolve(
        serving_model(model), image_size, required=True, purpose="serve_jpeg resizes to it"
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


def decode_like_pipeline(contents: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Decodes image bytes to uint8 `[H, W, 3]` RGB with the pixels the training and
    evaluation pipeline gets from the same file (`sare_tf.data.images.read_rgb`, Pillow).

    JPEGs use the accurate integer DCT (Pillow's; TensorFlow's default fast DCT differs by up
    to ~6 levels) and the same reduced-scale decoding of large photos, and are turned upright by
    their EXIF orientation as `read_rgb` turns them (PNG eXIf chunks are not read here); PNGs are composited
    over white where Pillow does so. GIF and BMP use `tf.io.decode_image` (transparent GIF
    pixels are not composited over white as Pillow does).

    Args:
        contents: scalar string tensor, already checked by `is_supported_image`.
        image_size: `(height, width)` the image will be resized to.

    Returns:
        uint8 `[H, W, 3]`.
    """
    height, width = image_size

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
        turned = orientation >= 5
        ratio = tf.cond(
            turned,
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


def decode_image_batch(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Decodes `[B]` encoded images to float32 `[B, height, width, 3]` RGB in [0, 255].

    Pixels are those of the training / evaluation pipeline for the same files
    (`decode_like_pipeline`, then `sare_tf.data.images.resize_image`). Each element is checked
    before decoding: bytes that are not an image fail with an `InvalidArgumentError` naming
    the batch element, e.g. "image_bytes[1] (5 bytes) is not a JPEG, PNG, GIF or BMP image".
    Bytes that look like an image but are broken (a truncated JPEG) fail in the decoder with
    its own message ("Invalid JPEG data ..."). A batch never yields descriptors of undecodable
    input.

    Args:
        image_bytes: string tensor `[B]`.
        image_size: `(height, width)` of the output.

    Returns:
        float32 `[B, height, width, 3]`.
    """
    height, width = image_size

    def decode_one(element):
        index, contents = element
        check = tf.debugging.Assert(
            is_supported_image(contents),
            [
                tf.strings.format(
                    "image_bytes[{}] ({} bytes) is not a " + _FORMAT_NAMES + " image",
                    (index, tf.strings.length(contents)),
                )
            ],
            name="check_image_format",
        )
        with tf.control_dependencies([check]):
            image = decode_like_pipeline(contents, image_size)
        return resize_image(image, (height, width))

    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])
    return tf.map_fn(
        decode_one,
        (indices, image_bytes),
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )


def build_export_archive(model: keras.Model, image_size=None) -> keras.export.ExportArchive:
    """Traces both serving signatures of `model` into an `ExportArchive` (not yet written).

    Args:
        model: embedding model (or tuple model wrapping one).
        image_size: `(height, width)` for `serve_jpeg` (see `resolve_image_size`).

    Returns:
        The archive; `archive.write_out(path, verbose=False)` writes the SavedModel.
    """
    model = serving_model(model)
    size = resolve_image_size(model, image_size)
    fixed = tuple(model.inputs[0].shape[1:3])

    def describe(image):
        if None not in fixed:
            # As the Keras model does: a fixed-size model refuses other sizes rather than
            # returning descriptors of a scale it was never trained on.
            check = tf.debugging.assert_equal(
                tf.shape(image)[1:3],
                tf.constant(fixed, tf.int32),
                message=f"{IMAGE_INPUT} must be {fixed[0]}x{fixed[1]} (height x width) for this "
                f"model; resize it or send the encoded file to {SERVE_JPEG}. Received [height width]",
            )
            with tf.control_dependencies([check]):
                image = tf.identity(image)
        descriptor = model(image, training=False)
        return {DESCRIPTOR_OUTPUT: tf.cast(descriptor, tf.float32)}

    def describe_encoded(image_bytes):
        return describe(decode_image_batch(image_bytes, size))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_DEFAULT,
        describe,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGE_INPUT)],
    )
    archive.add_endpoint(
        SERVE_JPEG,
        describe_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    return archive


def signature_summary(model: keras.Model, image_size=None) -> dict:
    """What the SavedModel serves, as JSON-ready data (for `export_info.json`)."""
    model = serving_model(model)
    size = resolve_image_size(model, image_size)
    depth = int(model.outputs[0].shape[-1])
    output = {DESCRIPTOR_OUTPUT: {"dtype": "float32", "shape": [None, depth]}}
    return {
        SERVING_DEFAULT: {
            "inputs": {IMAGE_INPUT: {"dtype": "float32", "shape": [None, None, None, 3]}},
            "outputs": output,
        },
        SERVE_JPEG: {
            "inputs": {BYTES_INPUT: {"dtype": "string", "shape": [None]}},
            "outputs": output,
            "resized_to": list(size),
        },
    }


def write_saved_model(model: keras.Model, directory, image_size=None) -> None:
    """Writes the SavedModel into `directory` in place (no temporary folder; see
    `export_saved_model` for the atomic version)."""
    build_export_archive(model, image_size).write_out(os.fspath(directory), verbose=False)


def export_saved_model(model: keras.Model, export_dir, image_size=None) -> str:
    """Exports `model` as a SavedModel with `serving_default` and `serve_jpeg` signatures.

    The SavedModel is written to a temporary folder beside `export_dir` and renamed into place,
    so `export_dir` either holds a complete SavedModel or does not exist.

    Args:
        model: embedding model (input "image" RGB 0-255, output "descriptor"), or a tuple
            model wrapping one.
        export_dir: the SavedModel folder to create; it must not exist or be empty.
        image_size: `(height, width)` that `serve_jpeg` resizes to; defaults to the model's
            fixed input size and is required when the model takes any size.

    Returns:
        `export_dir` as a string.

    Example:
        >>> model = build_embedding_model("tiny", num_clusters=4, input_shape=(64, 64, 3))
        >>> export_saved_model(model, "/tmp/tiny_netvlad")
        '/tmp/tiny_netvlad'
        >>> served = tf.saved_model.load("/tmp/tiny_netvlad")  # in any TensorFlow process
        >>> served.signatures["serve_jpeg"](image_bytes=tf.constant([jpeg]))["descriptor"]
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise FileExistsError(
            f"Refusing to overwrite an existing export. Received: export_dir={export_dir!r}"
        )
    # Fail on a bad model or image size before touching the file system.
    archive = build_export_archive(model, image_size)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        archive.write_out(staging, verbose=False)
        os.replace(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir
