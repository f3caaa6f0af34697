"""2-D maps of descriptors for plots: t-SNE and a PCA projection, both from scikit-learn.

t-SNE is scikit-learn's Barnes-Hut `TSNE` (van der Maaten, "Accelerating t-SNE using Tree-Based
Algorithms", JMLR 2014), O(n log n), so maps of tens of thousands of queries are practical;
inputs are first reduced to 50 dimensions by PCA, as is customary.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


def pca_project(x, num_components: int = 2) -> np.ndarray:
    """Projects rows of `x` on their top principal components (scikit-learn `PCA`).

    Args:
        x: `[n, d]` data.
        num_components: output dimensions.

    Returns:
        `[n, max(num_components, 2)]` float64 coordinates (centred; padded with zeros when the
        data has fewer dimensions), signs fixed so that the largest loading of each component is
        positive (deterministic output).
    """

    x = np.asarray(x, dtype=np.float64)
    num_components = min(num_components, *x.shape)
    pca = PCA(n_components=num_components, svd_solver="full").fit(x)
    components = pca.components_
    signs = np.sign(components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)])
    projected = (x - pca.mean_) @ (components * signs[:, None]).T
    if projected.shape[1] < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    return projected


def tsne(x, perplexity: float = 30.0, num_iterations: int = 1000, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D (scikit-learn's Barnes-Hut `TSNE`, PCA initialisation).

    Args:
        x: `[n, d]` points (n >= 4).
        perplexity: effective number of neighbours (clipped below n - 1).
        num_iterations: optimisation steps (scikit-learn's `max_iter`, at least 250).
        seed: `random_state`: the same seed gives the same map.

    Returns:
        `[n, 2]` float64 coordinates.

    Reference:
        van der Maaten and Hinton, "Visualizing Data using t-SNE", JMLR 2008.
    """

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points. Received: {n}")
    if x.shape[1] > 50:
        x = pca_project(x, 50)
    model = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), n - 1.0),
        max_iter=max(250, int(num_iterations)),
        init="pca",
        random_state=seed,
    )
    return np.asarray(model.fit_transform(x), dtype=np.float64)
