"""Single labelled images as batches, for objectives trained on images rather than tuples
(geographic classification): `(images [B, H, W, 3] float32 0-255, labels [B] int32)`.

Each epoch is one pass over the images in a seeded order (a new order every epoch); unreadable
images follow the bad-image policy of the tuple pipeline (skipped and counted, or stop).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sare_tf.data.checks import BadImageLog, check_policy
from sare_tf.data.images import DEFAULT_MAX_PIXELS, safe_load_image
from sare_tf.data.parallelism import PREFETCH_BATCHES, decoders, without_autotuning


def labelled_image_dataset(
    paths,
    labels,
    image_size,
    batch_size: int = 32,
    seed: int = 0,
    shuffle: bool = True,
    bad_images: BadImageLog | None = None,
    on_bad_image: str = "skip",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tf.data.Dataset:
    """The batches of `paths` with their `labels` (module docstring)."""
    labels = np.asarray(labels, np.int32).reshape(-1)
    if len(paths) != len(labels) or len(paths) == 0:
        raise ValueError(
            f"Need one label per image and at least one image. Received: {len(paths)} paths, "
            f"{len(labels)} labels"
        )
    bad_images = bad_images or BadImageLog(check_policy(on_bad_image))
    height, width = int(image_size[0]), int(image_size[1])
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)

    def load(path, label):
        image, ok = safe_load_image(path, (height, width), bad_images, max_pixels)
        return image, label, ok

    dataset = dataset.map(load, num_parallel_calls=decoders())
    dataset = dataset.filter(lambda image, label, ok: ok)
    dataset = dataset.map(lambda image, label, ok: (image, label))
    dataset = without_autotuning(dataset.batch(batch_size).prefetch(PREFETCH_BATCHES))
    dataset.bad_images = bad_images
    return dataset
