"""Generalized-mean (GeM) pooling with an optional fully connected projection.

The aggregation of CosPlace (Berton et al., CVPR 2022) and EigenPlaces (Berton et al., ICCV
2023): per-location L2 normalisation of the channels, GeM, a linear layer, L2.
"""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.layers._dtype import float32_compute_policy
from sare_tf.layers.netvlad import l2_normalize


def gem_pool(features, p, eps: float = 1e-6):
    """`(mean_{h,w} max(x, eps)^p)^(1/p)` per channel: `[B, H, W, D]` -> `[B, D]`.

    p = 1 is average pooling; p -> infinity tends to max pooling.

    Reference:
        Radenovic et al., "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018,
        eq. (3).
    """
    powered = ops.power(ops.maximum(features, eps), p)
    return ops.power(ops.mean(powered, axis=(1, 2)), 1.0 / p)


def gem_aggregate(features, p, kernel=None, bias=None, eps: float = 1e-6, normalize_input=True):
    """[L2 over channels per location] -> GeM -> [x W + b] -> L2, as a pure function.

    Args:
        features: `[B, H, W, D]` feature map.
        p: the GeM exponent (a scalar or a `[1]` tensor).
        kernel: `[D, F]` kernel of the projection, or None for no projection.
        bias: `[F]` bias of the projection.
        eps: GeM's clamp of the features.
        normalize_input: L2-normalise each location's channels first (CosPlace / EigenPlaces do).

    Returns:
        `[B, F]` (or `[B, D]` without projection) unit-norm descriptors.
    """
    if normalize_input:
        features = l2_normalize(features, axis=-1)
    pooled = gem_pool(features, p, eps)
    if kernel is not None:
        pooled = ops.matmul(pooled, kernel) + bias
    return l2_normalize(pooled, axis=-1)


@keras.saving.register_keras_serializable(package="sare_tf")
class GeM(keras.layers.Layer):
    """GeM pooling of a feature map into one descriptor, with an optional projection.

    The exponent p is learnt (one scalar, initial value `p`). Computes in float32 under any
    policy; the output is float32 and L2-normalised.

    Args:
        output_dim: size of the fully connected projection after pooling (CosPlace's
            `fc_output_dim`); None keeps the D pooled channels.
        p: initial GeM exponent (3 in CosPlace / EigenPlaces).
        eps: clamp of the features before the power.
        normalize_input: L2-normalise each location's channels before pooling.
        **kwargs: base layer arguments (`name`, `trainable`, `dtype`).

    Call arguments:
        inputs: `[B, H, W, D]` feature map.

    Returns:
        `[B, output_dim or D]` float32 unit-norm descriptors.

    Example:
        >>> GeM(output_dim=16)(np.random.rand(2, 5, 7, 32).astype("float32")).shape
        (2, 16)

    Reference:
        Radenovic et al., TPAMI 2018, eq. (3); Berton et al., "Rethinking Visual
        Geo-localization for Large-Scale Applications" (CosPlace), CVPR 2022, sec. 4.
    """

    def __init__(
        self,
        output_dim: int | None = None,
        p: float = 3.0,
        eps: float = 1e-6,
        normalize_input: bool = True,
        **kwargs,
    ):
        if output_dim is not None and (not isinstance(output_dim, int) or output_dim < 1):
            raise ValueError(
                f"`output_dim` must be a positive integer or None. Received: output_dim={output_dim!r}"
            )
        if not p > 0:
            raise ValueError(f"`p` must be positive. Received: p={p!r}")
        kwargs["dtype"] = float32_compute_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.p = float(p)
        self.eps = float(eps)
        self.normalize_input = bool(normalize_input)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        depth = input_shape[-1]
        if depth is None:
            raise ValueError(
                f"GeM needs a known channel count. Received: input_shape={input_shape}"
            )
        self.depth = int(depth)
        self.exponent = self.add_weight(
            name="p", shape=(1,), initializer=keras.initializers.Constant(self.p)
        )
        self.kernel = self.bias = None
        if self.output_dim is not None:
            self.kernel = self.add_weight(
                name="fc_kernel",
                shape=(self.depth, self.output_dim),
                initializer=keras.initializers.GlorotUniform(),
            )
            self.bias = self.add_weight(
                name="fc_bias", shape=(self.output_dim,), initializer="zeros"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self.depth})

    def call(self, inputs):
        features = ops.cast(inputs, self.compute_dtype)
        return gem_aggregate(
            features, self.exponent, self.kernel, self.bias, self.eps, self.normalize_input
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "p": self.p,
                "eps": self.eps,
                "normalize_input": self.normalize_input,
            }
        )
        return config
