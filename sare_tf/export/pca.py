"""Fitting PCA whitening on database images at export time (`sare-tf export --pca-dim`)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from sare_tf.encoding import encode
from sare_tf.models import embedding_of, with_pca_whitening


def netvlad_output_model(model: keras.Model) -> keras.Model:
    """image -> the "netvlad" layer's output `[B, K*D]` (before any PCA whitening)."""
    embedding = embedding_of(model)
    return keras.Model(
        embedding.input, embedding.get_layer("netvlad").output, name=f"{embedding.name}_netvlad"
    )


def netvlad_descriptors(
    model: keras.Model,
    image_paths: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int = 16,
    verbose: bool = True,
) -> np.ndarray:
    """NetVLAD descriptors `[N, K*D]` of image files (the input PCA whitening is fitted on).

    Extracted with `sare_tf.encoding.encode` (the one encoder: same image loading as evaluation).
    """
    descriptors, _ = encode(
        netvlad_output_model(model),
        list(image_paths),
        image_size=image_size,
        batch_size=batch_size,
        progress=verbose,
    )
    return np.asarray(descriptors, dtype=np.float32)


def add_pca_whitening(
    model: keras.Model,
    image_paths: Sequence[str],
    pca_dim: int,
    image_size: tuple[int, int],
    max_images: int = 10_000,
    batch_size: int = 16,
    seed: int = 0,
    verbose: bool = True,
) -> keras.Model:
    """A copy of `model` with PCA whitening to `pca_dim`, fitted on images' NetVLAD descriptors.

    Args:
        model: embedding model without PCA whitening.
        image_paths: images to fit on (normally the database images of the training set).
        pca_dim: whitened descriptor size; needs at least `pca_dim + 1` images.
        image_size: `(height, width)` images are resized to.
        max_images: at most this many images (a seeded random subset) are described.
        batch_size: images per forward pass.
        seed: subset seed.
        verbose: show a progress bar.

    Returns:
        The new model (see `sare_tf.models.with_pca_whitening`).
    """
    paths = list(image_paths)
    if not paths:
        raise ValueError("No images to fit PCA whitening on. Received: image_paths=[]")
    if len(paths) > max_images:
        chosen = np.random.default_rng(seed).choice(len(paths), size=max_images, replace=False)
        paths = [paths[index] for index in np.sort(chosen)]
    if pca_dim > len(paths) - 1:
        raise ValueError(
            f"PCA whitening to {pca_dim} dims needs at least {pca_dim + 1} images; "
            f"{len(paths)} are available. Received: pca_dim={pca_dim}"
        )
    descriptors = netvlad_descriptors(model, paths, image_size, batch_size, verbose)
    return with_pca_whitening(model, descriptors, pca_dim, max_samples=len(paths), seed=seed)
