"""Request values -> a float32 image batch at the served model's size.

Encoded images are decoded with Pillow exactly as training and evaluation read files
(`sare_tf.data.images.decode_image_bytes`, EXIF orientation applied) and resized with the same
op; `serving_default` pixels are taken as sent, after checks.
"""

from __future__ import annotations

import numpy as np

from sare_tf.data.images import BadImageError, decode_image_bytes, resize_image
from sare_tf.serving.protocol import SERVE_JPEG, RequestError, decode_b64, pixels_from_json
from sare_tf.serving.settings import MAX_PIXELS


def decode_images(signature: str, values, image_size, max_pixels: int = MAX_PIXELS):
    """`[n, H, W, 3]` float32 from one request's input values.

    Raises:
        RequestError: a value that is not an image of the signature's kind, too many pixels,
            or images of different sizes (naming the instance).
    """
    images = []
    for number, value in enumerate(values):
        if signature == SERVE_JPEG:
            contents = decode_b64(value, number)
            try:
                pixels = decode_image_bytes(contents, f"instance {number}", image_size, max_pixels)
            except BadImageError as error:
                raise RequestError(str(error)) from None
            if image_size is not None:
                pixels = np.asarray(resize_image(pixels, image_size))
            images.append(np.asarray(pixels, np.float32))
        else:
            images.append(pixels_from_json(value, number, max_pixels))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise RequestError(
            f"All images of one request must have one size. Received sizes: {sorted(shapes)}"
        )
    return np.stack(images)
