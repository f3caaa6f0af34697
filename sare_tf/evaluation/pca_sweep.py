"""Recall@N per descriptor size from one extraction (the SARE paper's Table 5 protocol).

As the NetVLAD authors do for their dimensionality reduction: PCA whitening is learnt once, with
the largest requested number of components; each size D keeps the first D whitened components
and L2-normalises them. The first D components of the largest fit are the D-component fit (up to
each direction's sign, which changes no distance), so every row equals a separate evaluation of
a model exported with `--pca-dim D` fitted on the same descriptors.
"""

from __future__ import annotations

import numpy as np

from sare_tf.layers.pca_whitening import fit_pca_whitening


def parse_pca_dims(text) -> tuple[int, ...]:
    """`"4096,2048,512"` (or a sequence) -> `(4096, 2048, 512)`, positive and distinct."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        dims = tuple(int(item) for item in items if str(item).strip())
    except ValueError:
        raise ValueError(f"--pca-dims takes sizes like 4096,2048,512. Received: {text!r}") from None
    if not dims or any(d <= 0 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"PCA sizes must be distinct positive integers. Received: {text!r}")
    return dims


def reduce_descriptors(descriptors, mean, projection, dim: int) -> np.ndarray:
    """`L2(((x - mean) @ projection)[:, :dim])` as float32."""
    reduced = (np.asarray(descriptors, np.float64) - mean) @ projection[:, :dim]
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return (reduced / np.maximum(norms, 1e-12)).astype(np.float32)


def pca_sweep(query_desc, db_desc, dims, evaluate, fit_descriptors=None, max_samples=10_000,
              seed: int = 0) -> dict:  # fmt: skip
    """Evaluates the descriptors reduced to each size in `dims`.

    Args:
        query_desc: `[Q, D]` descriptors.
        db_desc: `[Ndb, D]` descriptors.
        dims: sizes, each at most D and below the number of fitting descriptors.
        evaluate: `evaluate(query_desc, db_desc) -> result` (e.g. a `RecallResult`).
        fit_descriptors: what PCA whitening is learnt on (default `db_desc`; the NetVLAD
            authors learn it on the training database).
        max_samples, seed: at most this many fitting descriptors (a seeded subset).

    Returns:
        `{dim: result}` in the order of `dims`.
    """

    fit_on = db_desc if fit_descriptors is None else fit_descriptors
    largest = max(dims)
    mean, projection = fit_pca_whitening(fit_on, largest, max_samples=max_samples, seed=seed)
    return {
        dim: evaluate(
            reduce_descriptors(query_desc, mean, projection, dim),
            reduce_descriptors(db_desc, mean, projection, dim),
        )
        for dim in dims
    }
