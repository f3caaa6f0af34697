"""Image sizes as settings: `(height, width)`, checked once (no TensorFlow needed)."""

from __future__ import annotations


def check_image_size(image_size) -> tuple[int, int] | None:
    """`(height, width)` as two positive ints, or None; anything else is a ValueError."""
    if image_size is None:
        return None
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"`image_size` must be (height, width). Received: image_size={image_size!r}"
        ) from None
    if height < 1 or width < 1:
        raise ValueError(
            f"`image_size` must be two positive integers. Received: image_size={image_size!r}"
        )
    return height, width
