"""Reading images from disk into RGB float tensors.

Two paths:

- `decode_rgb` / `resize_image` / `load_image`: TensorFlow ops, fast, for files known to be good
  (a missing or corrupt file raises inside the graph).
- `read_rgb` (Pillow) and `safe_load_image` (its tf.data wrapper): every file Pillow can open,
  converted to 8-bit RGB (grayscale, palette, RGBA, CMYK / inverted Adobe CMYK JPEG, 16-bit
  PNG), very large JPEGs decoded at reduced scale, and bad files (missing, empty, truncated,
  not an image, too many pixels) reported instead of raised: `safe_load_image` never raises and
  returns a blank image with `ok=False`. Resizing is the same TensorFlow op in both paths.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from sare_tf.data.graph_decoding import decode_like_pipeline

# Images with more pixels than this are refused (a 60-megapixel photo decodes to 180 MB).
DEFAULT_MAX_PIXELS = 60_000_000


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Bad image file {path}: {reason}")
        self.path = path
        self.reason = reason


def decode_rgb(contents: tf.Tensor, image_size=None) -> tf.Tensor:
    """Decodes JPEG / PNG / GIF / BMP bytes to `[H, W, 3]` uint8 RGB, in-graph, with the pixels
    `read_rgb` gives (`sare_tf.data.graph_decoding.decode_like_pipeline`)."""
    return decode_like_pipeline(contents, image_size)


def resize_image(image: tf.Tensor, image_size) -> tf.Tensor:
    """Resizes `[H, W, 3]` to `image_size = (height, width)` (antialiased bilinear); float32 0-255."""
    image = tf.image.resize(
        tf.cast(image, tf.float32), image_size, method="bilinear", antialias=True
    )
    return tf.clip_by_value(image, 0.0, 255.0)


def load_image(path, image_size=None) -> tf.Tensor:
    """Reads an image file as float32 RGB in [0, 255], resized to `image_size` when given."""
    image = decode_rgb(tf.io.read_file(path), image_size)
    if image_size is None:
        return tf.cast(image, tf.float32)
    return resize_image(image, image_size)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to `[H, W, 3]` uint8 RGB, scaling high bit depths rather than clipping."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG); mode "I" holds it in int32. Scale 0..65535 to 0..255.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if np.nanmax(values, initial=0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.nan_to_num(np.round(values)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    # L, 1, P, CMYK (Pillow undoes Adobe's inverted CMYK while decoding), YCbCr, LAB, HSV.
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


# EXIF orientations 5-8 swap width and height (a phone held upright).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
EXIF_ORIENTATION_TAG = 0x0112


def read_rgb(path, image_size=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads any image file Pillow supports as `[H, W, 3]` uint8 RGB, upright.

    The EXIF orientation of phone photos is applied (the pixels are turned as a viewer shows
    them), in training, evaluation, indexing, localisation and serving alike.

    Args:
        path: the file.
        image_size: the `(height, width)` the caller will resize to, or None. A JPEG at least
            twice as large in both directions is decoded at a reduced scale (1/2, 1/4 or 1/8,
            never below `image_size`; the DCT-domain reduction is a box-like filter): much
            faster for large photos. Otherwise the pixels are exactly `decode_rgb`'s (for files
            without an EXIF rotation).
        max_pixels: larger images are refused (memory).

    Returns:
        The pixels.

    Raises:
        BadImageError: missing, empty, truncated, not an image, too large, or undecodable; the
            message names the file.
    """
    path = os.fsdecode(path)
    if not os.path.exists(path):
        raise BadImageError(path, "file not found")
    if os.path.isdir(path):
        raise BadImageError(path, "is a folder, not an image file")
    if os.path.getsize(path) == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    return _decode_with_pillow(path, path, image_size, max_pixels)


def decode_image_bytes(
    contents: bytes, name: str = "image", image_size=None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """`read_rgb` for encoded bytes (an upload): `[H, W, 3]` uint8 RGB, upright.

    Raises:
        BadImageError: empty, truncated, not an image, too large or undecodable (named `name`).
    """
    if not contents:
        raise BadImageError(name, "empty (0 bytes)")
    return _decode_with_pillow(io.BytesIO(contents), name, image_size, max_pixels)


def _decode_with_pillow(source, name: str, image_size, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadImageError(
                        name,
                        f"{width}x{height} pixels is more than the limit of {max_pixels} "
                        "(raise max_pixels to accept it)",
                    )
                orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
                if image_size is not None and image.format == "JPEG":
                    # Large JPEG: decode at 1/2, 1/4 or 1/8 scale (the largest that keeps it
                    # at least `image_size`); `sare_tf.export` reproduces this rule in-graph.
                    target_h, target_w = int(image_size[0]), int(image_size[1])
                    if orientation in _TRANSPOSING_ORIENTATIONS:
                        target_h, target_w = target_w, target_h
                    if width >= 2 * target_w and height >= 2 * target_h:
                        image.draft(image.mode, (target_w, target_h))
                image.load()
                if orientation != 1:
                    image = ImageOps.exif_transpose(image)
                pixels = _to_rgb_array(image)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(name, f"too many pixels ({error})") from error
    except Image.UnidentifiedImageError as error:
        raise BadImageError(name, "not an image file (format not recognised)") from error
    except OSError as error:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated").
        raise BadImageError(name, f"corrupt or truncated image data ({error})") from error
    except Exception as error:  # any other decoder failure is a bad file, not a crash
        raise BadImageError(name, f"cannot decode ({type(error).__name__}: {error})") from error
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
        raise BadImageError(name, f"decoded to an unusable shape {pixels.shape}")
    return pixels


def safe_load_image(
    path, image_size, bad_images=None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loads an image inside tf.data without ever raising: `(image, ok)`.

    Decoding runs in Pillow (which releases the GIL while decoding, so parallel tf.data calls
    use several cores); resizing is the same TensorFlow op as `load_image`.

    Args:
        path: scalar string tensor (or str).
        image_size: `(height, width)` of the output; None keeps each image's own size (for
            one-image batches; a bad file then gives a 1x1 black image).
        bad_images: optional `sare_tf.data.checks.BadImageLog` that records each bad file's
            path and reason; when its policy is "error" the load raises instead (as a
            `tf.errors.InvalidArgumentError` whose message names the file).
        max_pixels: larger images count as bad.

    Returns:
        `image` float32 `[H, W, 3]` in [0, 255] (zeros for a bad file) and `ok` scalar bool.
    """
    native = image_size is None
    height, width = (1, 1) if native else (int(image_size[0]), int(image_size[1]))

    def _read(path_value):
        path_text = path_value.item() if isinstance(path_value, np.ndarray) else path_value
        path_text = os.fsdecode(path_text)
        try:
            pixels = read_rgb(path_text, None if native else (height, width), max_pixels)
            return pixels, np.bool_(True)
        except Exception as error:  # never raise inside tf.data (unless the policy says so)
            reason = error.reason if isinstance(error, BadImageError) else repr(error)
            if bad_images is not None:
                bad_images.record(path_text, reason)  # raises under the "error" policy
            return np.zeros((height, width, 3), np.uint8), np.bool_(False)

    pixels, ok = tf.numpy_function(_read, [path], [tf.uint8, tf.bool], stateful=False)
    pixels.set_shape([None, None, 3])
    ok.set_shape([])
    if native:
        return tf.cast(pixels, tf.float32), ok
    image = resize_image(pixels, (height, width))
    image.set_shape([height, width, 3])
    return image, ok
