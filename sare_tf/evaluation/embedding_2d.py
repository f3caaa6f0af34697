"""2-D maps of descriptors for plots: exact t-SNE in numpy, and a PCA projection.

scikit-learn is not part of the stack, so t-SNE is implemented here from the paper (van der
Maaten and Hinton, "Visualizing Data using t-SNE", JMLR 2008): Gaussian input affinities with a
per-point bandwidth found by bisection to match a perplexity, symmetrised joint probabilities P;
a Student-t (one degree of freedom) output kernel Q; gradient descent on KL(P || Q) with early
exaggeration, momentum and per-parameter adaptive gains. It is the exact O(n^2) algorithm, meant
for up to a few thousand points (callers subsample); inputs are first reduced to 50 dimensions
by PCA, as is customary.
"""

from __future__ import annotations

import numpy as np


def pca_project(x, num_components: int = 2) -> np.ndarray:
    """Projects rows of `x` on their top principal components.

    Args:
        x: `[n, d]` data.
        num_components: output dimensions.

    Returns:
        `[n, num_components]` float64 coordinates (centred), signs fixed so that the largest
        loading of each component is positive (deterministic output).
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    num_components = min(num_components, *centred.shape)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:num_components]
    signs = np.sign(components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)])
    components = components * signs[:, None]
    projected = centred @ components.T
    if projected.shape[1] < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    return projected


def _squared_distances(x: np.ndarray) -> np.ndarray:
    norms = np.sum(x * x, axis=1)
    squared = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(squared, 0.0)
    return np.maximum(squared, 0.0)


def conditional_affinities(
    x, perplexity: float = 30.0, tol: float = 1e-5, max_steps: int = 100
) -> np.ndarray:
    """t-SNE conditional probabilities p_{j|i} (`[n, n]`, rows sum to 1, zero diagonal).

    For each point i, the Gaussian precision beta_i is bisected so that the entropy (nats) of
    p_{j|i} ~ exp(-beta_i |x_i - x_j|^2) equals log(perplexity).
    """
    squared = _squared_distances(np.asarray(x, dtype=np.float64))
    n = len(squared)
    target = np.log(min(perplexity, n - 1))
    conditional = np.zeros((n, n))
    for i in range(n):
        distances = np.delete(squared[i], i)
        distances = distances - distances.min()  # shift for stability; p is shift-invariant
        beta, low, high = 1.0, 0.0, np.inf
        for _ in range(max_steps):
            weights = np.exp(-beta * distances)
            total = weights.sum()
            probabilities = weights / total
            entropy = np.log(total) + beta * np.sum(distances * probabilities)
            if abs(entropy - target) < tol:
                break
            if entropy > target:  # too flat: sharpen
                low = beta
                beta = beta * 2.0 if high == np.inf else (beta + high) / 2.0
            else:
                high = beta
                beta = (beta + low) / 2.0
        conditional[i, np.arange(n) != i] = probabilities
    return conditional


def input_affinities(x, perplexity: float = 30.0) -> np.ndarray:
    """Symmetrised t-SNE input probabilities P = (P_cond + P_cond^T) / 2n (`[n, n]`, sums to 1)."""
    conditional = conditional_affinities(x, perplexity)
    joint = (conditional + conditional.T) / (2.0 * len(conditional))
    return np.maximum(joint, 1e-12)


def tsne(
    x,
    perplexity: float = 30.0,
    num_iterations: int = 750,
    learning_rate: float | None = None,
    early_exaggeration: float = 12.0,
    exaggeration_iterations: int = 250,
    seed: int = 0,
) -> np.ndarray:
    """Exact t-SNE to 2-D.

    Args:
        x: `[n, d]` points (n >= 4).
        perplexity: effective number of neighbours (clipped below n - 1).
        num_iterations: gradient steps.
        learning_rate: step size; default max(n / early_exaggeration / 4, 50).
        early_exaggeration: factor on P during the first `exaggeration_iterations` steps.
        exaggeration_iterations: length of the early exaggeration phase.
        seed: seed of the small random jitter added to the PCA initialisation.

    Returns:
        `[n, 2]` float64 coordinates.

    Reference:
        van der Maaten and Hinton, JMLR 2008, sec. 3 (gradient: eq. 5).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points. Received: {n}")
    if x.shape[1] > 50:
        x = pca_project(x, 50)
    joint = input_affinities(x, perplexity)
    rng = np.random.default_rng(seed)
    y = pca_project(x, 2)
    y = y / (np.std(y[:, 0]) + 1e-12) * 1e-4 + rng.normal(scale=1e-6, size=y.shape)
    learning_rate = learning_rate or max(n / early_exaggeration / 4.0, 50.0)
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for step in range(num_iterations):
        exaggeration = early_exaggeration if step < exaggeration_iterations else 1.0
        momentum = 0.5 if step < exaggeration_iterations else 0.8
        kernel = 1.0 / (1.0 + _squared_distances(y))
        np.fill_diagonal(kernel, 0.0)
        q = np.maximum(kernel / kernel.sum(), 1e-12)
        # dC/dy_i = 4 sum_j (p_ij - q_ij) (1 + |y_i - y_j|^2)^-1 (y_i - y_j)
        weights = (exaggeration * joint - q) * kernel
        gradient = 4.0 * (np.sum(weights, axis=1)[:, None] * y - weights @ y)
        same_sign = np.sign(gradient) == np.sign(velocity)
        gains = np.where(same_sign, gains * 0.8, gains + 0.2).clip(0.01)
        velocity = momentum * velocity - learning_rate * gains * gradient
        y = y + velocity
        y = y - y.mean(axis=0)
    return y


def kl_divergence(joint: np.ndarray, y: np.ndarray) -> float:
    """KL(P || Q) of an embedding `y` under t-SNE's Student-t kernel (for tests and diagnostics)."""
    kernel = 1.0 / (1.0 + _squared_distances(np.asarray(y, dtype=np.float64)))
    np.fill_diagonal(kernel, 0.0)
    q = np.maximum(kernel / kernel.sum(), 1e-12)
    return float(np.sum(joint * np.log(joint / q)))
