"""Reading images from disk into RGB float tensors (TensorFlow ops, usable inside tf.data)."""

from __future__ import annotations

import tensorflow as tf


def decode_rgb(contents: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG / PNG / GIF / BMP bytes to `[H, W, 3]` uint8 RGB (grayscale and RGBA converted)."""
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, image_size) -> tf.Tensor:
    """Resizes `[H, W, 3]` to `image_size = (height, width)` (antialiased bilinear); float32 0-255."""
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def load_image(path, image_size=None) -> tf.Tensor:
    """Reads an image file as float32 RGB in [0, 255], resized to `image_size` when given."""
    image = decode_rgb(tf.io.read_file(path))
    if image_size is None:
        return tf.cast(image, tf.float32)
    return resize_image(image, image_size)
