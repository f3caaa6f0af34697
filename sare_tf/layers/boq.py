"""Bag-of-Queries (BoQ) aggregation (Ali-bey et al., CVPR 2024).

    feature map [B, H, W, C_in] -> 3x3 conv to C -> tokens [B, HW, C] -> LayerNorm
    -> L blocks, each: x = TransformerEncoderLayer(x)      (post-norm, ReLU MLP 4C, no dropout)
                       q = LayerNorm(Q + SelfAttention(Q))  (Q: learnt queries [num_queries, C])
                       out_l = LayerNorm(CrossAttention(q, x, x))
    -> concat_l out_l [B, L * num_queries, C] -> Linear over the queries (-> row_dim) per channel
    -> [B, C * row_dim] (index c * row_dim + r) -> L2

Attention is torch's `nn.MultiheadAttention`: one packed input projection `[3C, C]` (q, k, v),
`C / 64` heads, scores scaled by `head_dim ** -0.5`, an output projection. Layer norms use
epsilon 1e-5. All maths in float32 under any policy.

Reference: Ali-bey, Chaib-draa, Giguere, "BoQ: A Place is Worth a Bag of Learnable Queries",
CVPR 2024, sec. 3; facts from its MIT-licensed code (the layout of `src/boq.py`).
"""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.layers._dtype import float32_compute_policy
from sare_tf.layers.building_blocks import add_dense, check_positive_ints
from sare_tf.layers.netvlad import l2_normalize

LAYER_NORM_EPSILON = 1e-5


def layer_norm(x, gamma, beta, epsilon: float = LAYER_NORM_EPSILON):
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * ops.rsqrt(variance + epsilon) * gamma + beta


def multi_head_attention(query, key, value, weights: dict, num_heads: int):
    """torch's `nn.MultiheadAttention` (batch first, no mask) as a pure function.

    Args:
        query: `[B, Nq, C]`; key, value: `[B, Nk, C]`.
        weights: "in_kernel" `[C, 3C]` (q, k, v packed), "in_bias" `[3C]`, "out_kernel" `[C, C]`,
            "out_bias" `[C]`.
        num_heads: heads; C must divide by it.

    Returns:
        `[B, Nq, C]`.
    """
    dim = query.shape[-1]
    head_dim = dim // num_heads
    kernels = ops.split(weights["in_kernel"], 3, axis=1)
    biases = ops.split(weights["in_bias"], 3, axis=0)

    def heads(x, kernel, bias):
        projected = ops.matmul(x, kernel) + bias
        shape = ops.shape(x)
        return ops.transpose(
            ops.reshape(projected, (shape[0], shape[1], num_heads, head_dim)), (0, 2, 1, 3)
        )

    q = heads(query, kernels[0], biases[0]) * (head_dim**-0.5)
    k = heads(key, kernels[1], biases[1])
    v = heads(value, kernels[2], biases[2])
    attention = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
    out = ops.transpose(ops.matmul(attention, v), (0, 2, 1, 3))
    out = ops.reshape(out, (ops.shape(query)[0], ops.shape(query)[1], dim))
    return ops.matmul(out, weights["out_kernel"]) + weights["out_bias"]


def transformer_encoder_layer(x, weights: dict, num_heads: int):
    """torch's `nn.TransformerEncoderLayer` (post-norm, ReLU, dropout 0, batch first)."""
    attended = multi_head_attention(x, x, x, weights["self_attn"], num_heads)
    x = layer_norm(x + attended, *weights["norm1"])
    hidden = ops.relu(ops.matmul(x, weights["linear1"][0]) + weights["linear1"][1])
    x = layer_norm(
        x + ops.matmul(hidden, weights["linear2"][0]) + weights["linear2"][1], *weights["norm2"]
    )
    return x


def boq_block(x, queries, weights: dict, num_heads: int):
    """One BoQ block: `(encoded tokens [B, N, C], its query outputs [B, num_queries, C])`."""
    x = transformer_encoder_layer(x, weights["encoder"], num_heads)
    q = ops.broadcast_to(queries, (ops.shape(x)[0], *queries.shape[1:]))
    q = layer_norm(
        q + multi_head_attention(q, q, q, weights["self_attn"], num_heads), *weights["norm_q"]
    )
    out = multi_head_attention(q, x, x, weights["cross_attn"], num_heads)
    return x, layer_norm(out, *weights["norm_out"])


@keras.saving.register_keras_serializable(package="sare_tf")
class BoQ(keras.layers.Layer):
    """Bag-of-Queries aggregation of a feature map into one descriptor (module docstring).

    Args:
        proj_channels: C, the channels after the 3x3 input projection (512 for ResNet-50 in
            the authors' release, 384 for DINOv2).
        num_queries: learnt queries per block (64 in the releases).
        num_layers: blocks L (2 in the releases).
        row_dim: outputs of the final Linear over the `L * num_queries` query outputs (32);
            the descriptor has `C * row_dim` dims.
        num_heads: attention heads (default `C // 64`, as the authors set it).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[B, H, W, C_in]` feature map.

    Returns:
        `[B, proj_channels * row_dim]` float32 unit-norm descriptors.
    """

    def __init__(
        self,
        proj_channels: int = 512,
        num_queries: int = 64,
        num_layers: int = 2,
        row_dim: int = 32,
        num_heads: int | None = None,
        **kwargs,
    ):
        check_positive_ints(
            proj_channels=proj_channels, num_queries=num_queries, num_layers=num_layers,
            row_dim=row_dim,
        )  # fmt: skip
        num_heads = num_heads or max(proj_channels // 64, 1)
        if proj_channels % num_heads:
            raise ValueError(
                f"`proj_channels` must divide by `num_heads`. Received: proj_channels="
                f"{proj_channels}, num_heads={num_heads}"
            )
        kwargs["dtype"] = float32_compute_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.proj_channels, self.num_queries = proj_channels, num_queries
        self.num_layers, self.row_dim, self.num_heads = num_layers, row_dim, num_heads
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _attention_weights(self, prefix: str) -> dict:
        c = self.proj_channels
        dense = keras.initializers.GlorotUniform()
        return {
            "in_kernel": self.add_weight(name=f"{prefix}_in_kernel", shape=(c, 3 * c), initializer=dense),
            "in_bias": self.add_weight(name=f"{prefix}_in_bias", shape=(3 * c,), initializer="zeros"),
            "out_kernel": self.add_weight(name=f"{prefix}_out_kernel", shape=(c, c), initializer=dense),
            "out_bias": self.add_weight(name=f"{prefix}_out_bias", shape=(c,), initializer="zeros"),
        }  # fmt: skip

    def _norm_weights(self, prefix: str) -> tuple:
        c = self.proj_channels
        return (
            self.add_weight(name=f"{prefix}_gamma", shape=(c,), initializer="ones"),
            self.add_weight(name=f"{prefix}_beta", shape=(c,), initializer="zeros"),
        )

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"BoQ needs a known channel count. Received: input_shape={input_shape}"
            )
        c = self.proj_channels
        self.proj_kernel = self.add_weight(
            name="proj_c_kernel", shape=(3, 3, int(in_channels), c), initializer="glorot_uniform"
        )
        self.proj_bias = self.add_weight(name="proj_c_bias", shape=(c,), initializer="zeros")
        self.norm_input = self._norm_weights("norm_input")
        self.blocks = []
        for index in range(self.num_layers):
            p = f"boqs_{index}"
            self.blocks.append({
                "queries": self.add_weight(name=f"{p}_queries", shape=(1, self.num_queries, c),
                                           initializer=keras.initializers.RandomNormal(stddev=1.0)),
                "encoder": {
                    "self_attn": self._attention_weights(f"{p}_encoder_self_attn"),
                    "norm1": self._norm_weights(f"{p}_encoder_norm1"),
                    "linear1": add_dense(self, f"{p}_encoder_linear1", c, 4 * c),
                    "linear2": add_dense(self, f"{p}_encoder_linear2", 4 * c, c),
                    "norm2": self._norm_weights(f"{p}_encoder_norm2"),
                },
                "self_attn": self._attention_weights(f"{p}_self_attn"),
                "norm_q": self._norm_weights(f"{p}_norm_q"),
                "cross_attn": self._attention_weights(f"{p}_cross_attn"),
                "norm_out": self._norm_weights(f"{p}_norm_out"),
            })  # fmt: skip
        self.fc = add_dense(self, "fc", self.num_layers * self.num_queries, self.row_dim)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: int(in_channels)})

    def call(self, inputs):
        x = ops.conv(ops.cast(inputs, "float32"), self.proj_kernel, padding="same") + self.proj_bias
        shape = ops.shape(x)
        x = layer_norm(ops.reshape(x, (shape[0], -1, self.proj_channels)), *self.norm_input)
        outputs = []
        for block in self.blocks:
            x, out = boq_block(x, block["queries"], block, self.num_heads)
            outputs.append(out)
        pooled = ops.transpose(ops.concatenate(outputs, axis=1), (0, 2, 1))  # [B, C, L*Q]
        rows = ops.matmul(pooled, self.fc[0]) + self.fc[1]  # [B, C, row_dim]
        return l2_normalize(
            ops.reshape(rows, (shape[0], self.proj_channels * self.row_dim)), axis=-1
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.proj_channels * self.row_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "proj_channels": self.proj_channels,
            "num_queries": self.num_queries,
            "num_layers": self.num_layers,
            "row_dim": self.row_dim,
            "num_heads": self.num_heads,
        }
