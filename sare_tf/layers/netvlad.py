"""NetVLAD pooling (Arandjelovic et al., CVPR 2016), as used by SARE (Liu et al., ICCV 2019)."""

from __future__ import annotations

import math

import faiss
import keras
import numpy as np
from keras import ops

from sare_tf.layers._dtype import float32_compute_policy

_EPSILON = 1e-12


def l2_normalize(x, axis=-1):
    """L2-normalises ``x`` along ``axis`` (zero vectors stay zero)."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, _EPSILON))


def soft_assign(normalized_features, assignment_kernel, assignment_bias=None):
    """`softmax_k(x . w_k [+ b_k])`: the 1x1 convolution and softmax over the K clusters."""
    logits = ops.conv(normalized_features, assignment_kernel, strides=1, padding="valid")
    if assignment_bias is not None:
        logits = logits + assignment_bias
    return ops.softmax(logits, axis=-1)


def netvlad_aggregate(
    features, assignment_kernel, centroids, assignment_bias=None, location_weights=None
):
    """The NetVLAD maths as a pure function of tensors.

    Args:
        features: `[B, H, W, D]` local descriptors (any float dtype; computed in that dtype).
        assignment_kernel: `[1, 1, D, K]` kernel of the bias-free 1x1 assignment convolution.
        centroids: `[K, D]` cluster centres.
        assignment_bias: optional `[K]` bias of the assignment convolution (NetVLAD "v2").
        location_weights: optional `[B, H, W]` weight of each location's contribution (the
            contextual reweighting of CRN: `V_k = sum_i m_i a_k(x_i) (x_i - c_k)`).

    Returns:
        `[B, K * D]` descriptors, cluster-major (`index = k * D + d`), intra-normalised per
        cluster and then L2-normalised.
    """
    features = l2_normalize(features, axis=-1)
    assignment = soft_assign(features, assignment_kernel, assignment_bias)  # [B, H, W, K]
    if location_weights is not None:
        assignment = assignment * location_weights[..., None]
    return normalize_vlad(vlad_residuals(features, assignment, centroids))


def vlad_residuals(features, assignment, centroids):
    """`[B, K, D]` per-cluster sums of the assignment-weighted residuals `a_k(x) (x - c_k)`.

    Args:
        features: `[B, H, W, D]` (normalised) local descriptors.
        assignment: `[B, H, W, K]` their soft assignment.
        centroids: `[K, D]` cluster centres.
    """
    num_clusters, depth = centroids.shape[0], centroids.shape[1]
    batch = ops.shape(features)[0]
    features = ops.reshape(features, (batch, -1, depth))  # [B, HW, D]
    assignment = ops.reshape(assignment, (batch, -1, num_clusters))  # [B, HW, K]
    # sum_n a_nk (x_n - c_k) = (A^T X)_k - (sum_n a_nk) c_k: one matmul instead of a [B,HW,K,D] tensor.
    weighted_sum = ops.einsum("bnk,bnd->bkd", assignment, features)
    mass = ops.sum(assignment, axis=1)  # [B, K]
    return weighted_sum - mass[:, :, None] * centroids[None, :, :]


def normalize_vlad(residuals):
    """Intra-normalisation per cluster, cluster-major flattening and the final L2: `[B, K * D]`."""
    residuals = l2_normalize(residuals, axis=-1)
    batch, num_clusters, depth = ops.shape(residuals)[0], residuals.shape[1], residuals.shape[2]
    return l2_normalize(ops.reshape(residuals, (batch, num_clusters * depth)), axis=-1)


@keras.saving.register_keras_serializable(package="sare_tf")
class NetVLAD(keras.layers.Layer):
    """NetVLAD pooling of a convolutional feature map into one global descriptor.

    Each location's D channels are L2-normalised; a bias-free 1x1 convolution (kernel
    `alpha * c_hat_k`, normalised centroids) and a softmax give the soft assignment a_k(x);
    the residuals `x - c_k` are summed with those weights per cluster, intra-normalised,
    flattened cluster-major (`index = k * D + d`) and L2-normalised. Both the assignment
    kernel and the centroids are trainable. All maths runs in float32 and the output is
    float32 whatever the global dtype policy.

    Args:
        num_clusters: K, the number of visual words.
        assignment_bias: give the assignment convolution a bias `b_k` (NetVLAD "v2", as the
            `vladv2=True` checkpoints of pytorch-NetVlad and Patch-NetVLAD have); the original
            NetVLAD (default) has none.
        **kwargs: base layer arguments (`name`, `trainable`, `dtype`).

    Call arguments:
        inputs: `[B, H, W, D]` feature map.

    Returns:
        `[B, K * D]` float32 unit-norm descriptors.

    Example:
        >>> layer = NetVLAD(num_clusters=8)
        >>> layer(np.random.rand(2, 5, 7, 16).astype("float32")).shape
        (2, 128)

    Reference:
        Arandjelovic et al., "NetVLAD", CVPR 2016, eqs. (1)-(4); Liu et al., SARE, ICCV 2019, sec. 3.
    """

    def __init__(self, num_clusters: int = 64, assignment_bias: bool = False, **kwargs):
        if not isinstance(num_clusters, int) or num_clusters < 1:
            raise ValueError(
                f"`num_clusters` must be a positive integer. Received: num_clusters={num_clusters!r}"
            )
        kwargs["dtype"] = float32_compute_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.num_clusters = num_clusters
        self.assignment_bias = bool(assignment_bias)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        depth = input_shape[-1]
        if depth is None:
            raise ValueError(
                f"NetVLAD needs a known channel count. Received: input_shape={input_shape}"
            )
        self.depth = int(depth)
        self.assignment_kernel = self.add_weight(
            name="assignment_kernel",
            shape=(1, 1, self.depth, self.num_clusters),
            initializer=keras.initializers.GlorotUniform(),
        )
        self.centroids = self.add_weight(
            name="centroids",
            shape=(self.num_clusters, self.depth),
            initializer=keras.initializers.RandomUniform(0.0, 1.0),
        )
        self.bias = (
            self.add_weight(name="assignment_bias", shape=(self.num_clusters,), initializer="zeros")
            if self.assignment_bias
            else None
        )
        # 0 until set_centroids / initialize_from_descriptors ran: lets training know whether
        # cluster initialisation is still to be done, and survives save/load with the weights.
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros", trainable=False)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self.depth})

    def call(self, inputs):
        features = ops.cast(inputs, self.compute_dtype)
        return netvlad_aggregate(features, self.assignment_kernel, self.centroids, self.bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_clusters * input_shape[-1])

    def soft_assignment(self, inputs):
        """`[B, H, W, K]` soft assignment of each location to the clusters (rows sum to 1)."""
        features = l2_normalize(ops.cast(inputs, self.compute_dtype), axis=-1)
        return soft_assign(features, self.assignment_kernel, self.bias)

    @property
    def is_initialized(self) -> bool:
        """True once centroids were set (alpha > 0)."""
        return self.built and float(keras.ops.convert_to_numpy(self.alpha)) > 0.0

    def set_centroids(self, centroids, alpha: float) -> None:
        """Sets the centroids and the assignment kernel `alpha * c_hat`.

        Args:
            centroids: `[K, D]` cluster centres (stored as given).
            alpha: positive sharpness of the soft assignment.
        """
        centroids = np.asarray(centroids, dtype="float64")
        if centroids.ndim != 2 or centroids.shape[0] != self.num_clusters:
            raise ValueError(
                f"`centroids` must have shape [num_clusters={self.num_clusters}, D]. "
                f"Received: centroids.shape={centroids.shape}"
            )
        if not np.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"`alpha` must be a positive finite number. Received: alpha={alpha}")
        if not self.built:
            self.build((None, None, None, centroids.shape[1]))
        if centroids.shape[1] != self.depth:
            raise ValueError(
                f"`centroids` has {centroids.shape[1]} channels but the layer expects "
                f"D={self.depth}. Received: centroids.shape={centroids.shape}"
            )
        norms = np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), _EPSILON)
        kernel = (alpha * centroids / norms).T.reshape(1, 1, self.depth, self.num_clusters)
        self.assignment_kernel.assign(kernel.astype(self.assignment_kernel.dtype))
        self.centroids.assign(centroids.astype(self.centroids.dtype))
        self.alpha.assign(float(alpha))

    def adapt(self, descriptors, seed: int = 0, niter: int = 100) -> float:
        """Fits the layer to data, as Keras's data-fitted layers do: `initialize_from_descriptors`.

        The same verb fits `PCAWhitening` (`sare_tf.layers.PCAWhitening.adapt`).
        """
        return self.initialize_from_descriptors(descriptors, seed=seed, niter=niter)

    def initialize_from_descriptors(self, descriptors, seed: int = 0, niter: int = 100) -> float:
        """Clusters local descriptors with faiss k-means and sets the weights from them.

        The descriptors are L2-normalised, clustered into K centroids (100 iterations), and
        alpha is chosen, as in the original NetVLAD code, so that on average the nearest
        centroid gets 100 times the assignment weight of the second nearest:
        `alpha = -ln(0.01) / mean(top1 - top2)` of the dot products with normalised centroids.

        Args:
            descriptors: `[M, D]` local descriptors, M >= K.
            seed: k-means seed.
            niter: k-means iterations.

        Returns:
            The alpha that was set.
        """
        centroids, alpha = cluster_descriptors(
            descriptors, self.num_clusters, seed=seed, niter=niter
        )
        self.set_centroids(centroids, alpha)
        return alpha

    def get_config(self):
        config = super().get_config()
        config.update({"num_clusters": self.num_clusters, "assignment_bias": self.assignment_bias})
        return config


def kmeans_plus_plus_seeds(
    points, num_clusters: int, seed: int = 0, candidates: int | None = None
) -> np.ndarray:
    """Picks greedy k-means++ initial centres.

    Each step draws `candidates` points with probability proportional to their squared
    distance to the nearest centre so far and keeps the one that lowers the total squared
    distance most. Uniform random seeds (faiss' default) often put two seeds in one true
    cluster and none in another, which Lloyd iterations cannot undo; plain k-means++ still
    does so when clusters are wide, the greedy choice rarely.

    Args:
        points: `[M, D]` data.
        num_clusters: K.
        seed: random seed.
        candidates: draws per step (default `2 + ln K`).

    Returns:
        `[K, D]` float32 seeds.
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(points, dtype="float32")
    candidates = candidates or 2 + int(math.log(num_clusters))
    squared_norms = np.einsum("ij,ij->i", points, points)

    def squared_distances(centres):  # [C, M]
        return np.maximum(
            squared_norms[None, :] - 2.0 * centres @ points.T + np.sum(centres**2, axis=1)[:, None],
            0.0,
        )

    seeds = np.empty((num_clusters, points.shape[1]), dtype="float32")
    seeds[0] = points[rng.integers(points.shape[0])]
    nearest = squared_distances(seeds[:1])[0]
    for k in range(1, num_clusters):
        weights = nearest.astype("float64")
        total = weights.sum()
        if total <= 0:  # fewer distinct points than clusters
            seeds[k] = points[rng.integers(points.shape[0])]
            continue
        drawn = rng.choice(points.shape[0], size=candidates, p=weights / total)
        trial = np.minimum(nearest[None, :], squared_distances(points[drawn]))
        best = int(np.argmin(trial.sum(axis=1)))
        seeds[k] = points[drawn[best]]
        nearest = trial[best]
    return seeds


def cluster_descriptors(descriptors, num_clusters: int, seed: int = 0, niter: int = 100):
    """Runs faiss k-means (k-means++ seeds) on L2-normalised descriptors and derives alpha.

    Args:
        descriptors: `[M, D]` local descriptors.
        num_clusters: K.
        seed: k-means seed.
        niter: k-means iterations.

    Returns:
        `(centroids [K, D] float32, alpha float)`.
    """

    descriptors = np.asarray(descriptors, dtype="float32")
    if descriptors.ndim != 2:
        raise ValueError(f"`descriptors` must be [M, D]. Received: shape={descriptors.shape}")
    if not np.all(np.isfinite(descriptors)):
        raise ValueError("`descriptors` contain NaN or infinite values.")
    if descriptors.shape[0] < num_clusters:
        raise ValueError(
            f"Need at least num_clusters={num_clusters} descriptors to cluster. "
            f"Received: {descriptors.shape[0]} descriptors"
        )
    normalized = descriptors / np.maximum(
        np.linalg.norm(descriptors, axis=1, keepdims=True), _EPSILON
    )
    normalized = np.ascontiguousarray(normalized, dtype="float32")
    kmeans = faiss.Kmeans(
        normalized.shape[1],
        num_clusters,
        niter=niter,
        seed=seed,
        verbose=False,
        # faiss subsamples to 256 points per centroid by default; keep every descriptor.
        max_points_per_centroid=max(256, math.ceil(normalized.shape[0] / num_clusters)),
    )
    kmeans.train(
        normalized, init_centroids=kmeans_plus_plus_seeds(normalized, num_clusters, seed=seed)
    )
    centroids = kmeans.centroids.copy()
    alpha = assignment_alpha(normalized, centroids)
    return centroids, alpha


def assignment_alpha(descriptors, centroids) -> float:
    """`-ln(0.01) / mean(top1 - top2)` of descriptor . normalised-centroid dot products."""
    descriptors = np.asarray(descriptors, dtype="float64")
    centroids = np.asarray(centroids, dtype="float64")
    if centroids.shape[0] < 2:
        raise ValueError(f"alpha needs at least 2 centroids. Received: {centroids.shape[0]}")
    c_hat = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), _EPSILON)
    dots = descriptors @ c_hat.T
    top2 = -np.partition(-dots, 1, axis=1)[:, :2]
    gap = float(np.mean(top2[:, 0] - top2[:, 1]))
    if gap <= 0:
        raise ValueError(
            "All descriptors are equidistant to their two nearest centroids; alpha is undefined."
        )
    return -math.log(0.01) / gap
