"""PCA whitening of global descriptors (NetVLAD paper, sec. 5; SARE uses it at 4096-d)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from sare_tf.layers._dtype import float32_compute_policy
from sare_tf.layers.netvlad import l2_normalize


def fit_pca_whitening(
    descriptors, output_dim: int, max_samples: int = 10_000, seed: int = 0, epsilon: float = 1e-9
):
    """Fits PCA whitening in float64.

    The covariance is `X^T X / M` of the centred samples. When there are fewer samples than
    dimensions, the eigenvectors come from the `M x M` Gram matrix `X X^T / M` (the trick
    the original NetVLAD code uses for 32768-d VLAD vectors): if `G v = l v` then
    `u = X^T v / sqrt(M l)` is a unit eigenvector of the covariance with the same eigenvalue.

    Args:
        descriptors: `[M, D]` descriptors.
        output_dim: number of principal directions kept.
        max_samples: at most this many descriptors (a seeded random subset) are used.
        seed: subset seed.
        epsilon: added to eigenvalues before `1 / sqrt`.

    Returns:
        `(mean [D], projection [D, output_dim])`, the projection scaled by `1/sqrt(l + eps)`.
    """
    x = np.asarray(descriptors, dtype="float64")
    if x.ndim != 2:
        raise ValueError(f"`descriptors` must be [M, D]. Received: shape={x.shape}")
    if x.shape[0] > max_samples:
        rows = np.random.default_rng(seed).choice(x.shape[0], size=max_samples, replace=False)
        x = x[np.sort(rows)]
    num_samples, depth = x.shape
    if output_dim > depth:
        raise ValueError(
            f"`output_dim` must be <= the descriptor size {depth}. Received: output_dim={output_dim}"
        )
    # Centred data has rank <= M - 1: beyond that the eigenvalues are zero and whitening is undefined.
    if output_dim > num_samples - 1:
        raise ValueError(
            f"PCA whitening to output_dim={output_dim} needs at least {output_dim + 1} descriptors. "
            f"Received: {num_samples}"
        )
    mean = x.mean(axis=0)
    x = x - mean
    if num_samples < depth:
        gram = x @ x.T / num_samples
        eigenvalues, eigenvectors = np.linalg.eigh(gram)
        order = np.argsort(eigenvalues)[::-1][:output_dim]
        eigenvalues = eigenvalues[order]
        directions = (
            x.T @ eigenvectors[:, order] / np.sqrt(num_samples * np.maximum(eigenvalues, 1e-300))
        )
    else:
        covariance = x.T @ x / num_samples
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1][:output_dim]
        eigenvalues = eigenvalues[order]
        directions = eigenvectors[:, order]
    projection = directions / np.sqrt(eigenvalues + epsilon)[None, :]
    return mean, projection


@keras.saving.register_keras_serializable(package="sare_tf")
class PCAWhitening(keras.layers.Layer):
    """Projects descriptors on whitened principal directions, then L2-normalises.

    `y = L2((x - mean) @ P)` with `P = U diag(1/sqrt(l + 1e-9))` over the top `output_dim`
    eigenvectors. Weights are set by `fit` (not trained by gradient descent by default).
    Computes in float32 under any dtype policy.

    Args:
        output_dim: size of the whitened descriptor (e.g. 4096 down to 128).
        l2_normalize: L2-normalise the output (True for retrieval).
        use_bias: add a bias after the projection (imported learnt projections have one).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[B, D]` descriptors.

    Returns:
        `[B, output_dim]` float32.

    Example:
        >>> x = np.random.rand(300, 64).astype("float32")
        >>> layer = PCAWhitening.from_descriptors(x, output_dim=16)
        >>> layer(x[:2]).shape
        (2, 16)

    Reference:
        Arandjelovic et al., NetVLAD, CVPR 2016, sec. 5; Jegou & Chum, ECCV 2012.
    """

    def __init__(
        self, output_dim: int, l2_normalize: bool = True, use_bias: bool = False, **kwargs
    ):
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(
                f"`output_dim` must be a positive integer. Received: output_dim={output_dim!r}"
            )
        kwargs["dtype"] = float32_compute_policy(kwargs.get("dtype"))
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.l2_normalize = l2_normalize
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        depth = input_shape[-1]
        if depth is None:
            raise ValueError(
                f"PCAWhitening needs a known input size. Received: input_shape={input_shape}"
            )
        self.mean = self.add_weight(name="mean", shape=(int(depth),), initializer="zeros")
        self.projection = self.add_weight(
            name="projection", shape=(int(depth), self.output_dim), initializer="glorot_uniform"
        )
        # A learnt projection (Patch-NetVLAD's WPCA, a 1x1 convolution with bias) has one.
        self.bias = (
            self.add_weight(name="bias", shape=(self.output_dim,), initializer="zeros")
            if self.use_bias
            else None
        )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        y = ops.matmul(x - self.mean, self.projection)
        if self.bias is not None:
            y = y + self.bias
        return l2_normalize(y, axis=-1) if self.l2_normalize else y

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def adapt(self, descriptors, max_samples: int = 10_000, seed: int = 0) -> PCAWhitening:
        """Fits the layer to data, as Keras's data-fitted layers do (the verb `NetVLAD` shares)."""
        return self.fit(descriptors, max_samples=max_samples, seed=seed)

    def fit(self, descriptors, max_samples: int = 10_000, seed: int = 0) -> PCAWhitening:
        """Fits mean and projection on `[M, D]` descriptors (see `fit_pca_whitening`)."""
        descriptors = np.asarray(descriptors)
        mean, projection = fit_pca_whitening(
            descriptors, self.output_dim, max_samples=max_samples, seed=seed
        )
        if not self.built:
            self.build((None, descriptors.shape[1]))
        if mean.shape[0] != self.mean.shape[0]:
            raise ValueError(
                f"Descriptors have {mean.shape[0]} dims but the layer was built for {self.mean.shape[0]}."
            )
        self.mean.assign(mean.astype("float32"))
        self.projection.assign(projection.astype("float32"))
        return self

    @classmethod
    def from_descriptors(
        cls, descriptors, output_dim: int, max_samples: int = 10_000, seed: int = 0, **kwargs
    ):
        """Creates a layer fitted on `descriptors`."""
        return cls(output_dim, **kwargs).fit(descriptors, max_samples=max_samples, seed=seed)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "l2_normalize": self.l2_normalize,
                "use_bias": self.use_bias,
            }
        )
        return config
