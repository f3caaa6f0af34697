"""Initialising NetVLAD's clusters from local descriptors of training images.

As in the original NetVLAD code: run the cropped backbone on up to 500 images, keep up to 100
randomly chosen local descriptors per image, cluster them with k-means (100 iterations), and
set the centroids and the assignment sharpness alpha from the result. Unreadable images are
skipped and counted, as in training and evaluation (or fatal with `on_bad_image="error"`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from sare_tf.data.checks import BadImageLog, check_policy
from sare_tf.data.images import safe_load_image
from sare_tf.data.parallelism import PREFETCH_BATCHES, decoders, without_autotuning
from sare_tf.models import feature_model, netvlad_layer
from sare_tf.progress import ProgressBar

logger = logging.getLogger(__name__)


def _image_batches(
    paths: Sequence[str], image_size, batch_size: int, bad_images: BadImageLog
) -> tf.data.Dataset:
    """Batches of the readable images; unreadable ones are recorded in `bad_images` and left out."""
    dataset = tf.data.Dataset.from_tensor_slices(list(paths))
    dataset = dataset.map(
        lambda path: safe_load_image(path, image_size, bad_images),
        num_parallel_calls=decoders(),
    )
    dataset = dataset.filter(_was_read).map(_image_only)
    return without_autotuning(dataset.batch(batch_size).prefetch(PREFETCH_BATCHES))


# Named functions, not two lambdas on one line: AutoGraph cannot tell such lambdas apart and
# prints a long warning on every training run.
def _was_read(image, ok):
    return ok


def _image_only(image, ok):
    return image


def sample_local_descriptors(
    model: keras.Model,
    image_paths: Sequence[str],
    image_size: tuple[int, int] | None,
    descriptors_per_image: int = 100,
    max_images: int = 500,
    batch_size: int = 8,
    seed: int = 0,
    verbose: bool = True,
    on_bad_image: str = "skip",
    bad_images: BadImageLog | None = None,
) -> np.ndarray:
    """Samples local descriptors of the cropped backbone from images.

    Streams images through tf.data in batches and keeps only the sampled rows, so memory is
    bounded by `max_images * descriptors_per_image * D` floats whatever the image count.

    Args:
        model: an embedding model (or tuple model); its backbone up to the NetVLAD input is used.
        image_paths: candidate images; a seeded random subset of `max_images` is used.
        image_size: `(height, width)` all images are resized to (None: native size, batch 1).
        descriptors_per_image: local descriptors kept per image (all when the map is smaller).
        max_images: images used at most.
        batch_size: images per forward pass.
        seed: seed of the image subset and the location sampling.
        verbose: show a progress bar (and the bad files skipped, if any).
        on_bad_image: "skip" (leave unreadable images out, counted) or "error" (stop at the
            first, naming it).
        bad_images: a `BadImageLog` to record bad files in (one is made from `on_bad_image`
            otherwise).

    Returns:
        `[M, D]` float32 local descriptors (not normalised).

    Raises:
        ValueError: no image of the chosen subset could be read.
    """
    if len(image_paths) == 0:
        raise ValueError("No images to sample local descriptors from. Received: image_paths=[]")
    if descriptors_per_image < 1 or max_images < 1:
        raise ValueError(
            "`descriptors_per_image` and `max_images` must be positive. "
            f"Received: descriptors_per_image={descriptors_per_image}, max_images={max_images}"
        )
    if bad_images is None:
        bad_images = BadImageLog(check_policy(on_bad_image))
    rng = np.random.default_rng(seed)
    count = min(max_images, len(image_paths))
    chosen = np.sort(rng.choice(len(image_paths), size=count, replace=False))
    paths = [str(image_paths[i]) for i in chosen]
    features_of = feature_model(model)
    if image_size is None:
        batch_size = 1
    depth = features_of.output_shape[-1]
    samples = np.empty((count * descriptors_per_image, depth), dtype="float32")
    filled = 0
    bar = ProgressBar(count, "image", enabled=verbose)
    if verbose:
        logger.info(
            f"Sampling up to {descriptors_per_image} local descriptors from each of {count} images"
        )
    for batch in _image_batches(paths, image_size, batch_size, bad_images):
        features = np.asarray(
            keras.ops.convert_to_numpy(features_of(batch, training=False)), dtype="float32"
        )
        features = features.reshape(features.shape[0], -1, depth)
        for image_features in features:
            keep = min(descriptors_per_image, image_features.shape[0])
            rows = rng.choice(image_features.shape[0], size=keep, replace=False)
            samples[filled : filled + keep] = image_features[rows]
            filled += keep
        bar.add(features.shape[0])
    bar.update(count)  # skipped images are done too
    if bad_images.count and verbose:
        logger.info(f"Cluster initialisation skipped unreadable images. {bad_images.summary()}")
    if filled == 0:
        raise ValueError(
            f"None of the {count} images chosen for NetVLAD cluster initialisation could be "
            f"read. {bad_images.summary()}"
        )
    return samples[:filled]


def initialize_netvlad(
    model: keras.Model,
    image_paths: Sequence[str],
    image_size: tuple[int, int] | None,
    *,
    seed: int = 0,
    verbose: bool = True,
    **sampling,
) -> float:
    """Samples local descriptors and initialises the model's NetVLAD layer from them.

    Args:
        model: an embedding model (or a tuple model wrapping one).
        image_paths, image_size, seed, verbose: as in `sample_local_descriptors`; the seed
            also seeds the k-means.
        **sampling: the rest of `sample_local_descriptors`'s settings (`descriptors_per_image`,
            `max_images`, `batch_size`, `on_bad_image`).

    Returns:
        The alpha that was set.
    """
    descriptors = sample_local_descriptors(
        model, image_paths, image_size, seed=seed, verbose=verbose, **sampling
    )
    layer = netvlad_layer(model)
    if verbose:
        logger.info(
            f"Clustering {descriptors.shape[0]} descriptors into {layer.num_clusters} NetVLAD clusters"
        )
    return layer.adapt(descriptors, seed=seed)
