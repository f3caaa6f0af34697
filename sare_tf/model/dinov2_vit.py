"""DINOv2 vision transformers (ViT-S/14, ViT-B/14) that compute what the authors' torch code does.

    image -> 14x14/14 patch convolution -> [CLS] + patch tokens + position embeddings
          -> N blocks (LayerNorm, multi-head self-attention, LayerScale; LayerNorm, GELU MLP,
             LayerScale; each residual) -> patch tokens as a `[B, H/14, W/14, D]` map

Any image size works: the position embeddings, learnt for a square grid of `grid_size` patches
(37 x 37 for 518-pixel pretraining), are resized to the image's patch grid by bicubic
interpolation exactly as `DinoVisionTransformer.interpolate_pos_encoding` does it with torch:
`F.interpolate(mode="bicubic", align_corners=False, scale_factor=((h + 0.1) / M, (w + 0.1) / M))`,
i.e. cubic convolution with A = -0.75, source coordinate `(dst + 0.5) / scale - 0.5`, borders
clamped (`interpolation_matrix`); on the M x M grid itself they are used as learnt. TensorFlow's and KerasHub's bicubic resize use A = -0.5 and the
exact size, which differs by a few percent of the output.

Layer names follow the torch module paths with "." -> "_" (`patch_embed_proj`, `blocks_3`,
`norm`); a block is one layer (`ViTBlock`) holding its norm1 / attn.qkv / attn.proj / ls1 /
norm2 / mlp.fc1 / mlp.fc2 / ls2 weights, so freezing "before blocks_10" trains the last two.

Reference: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023;
Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021. Facts from facebookresearch/dinov2
(Apache-2.0): LayerNorm eps 1e-6, qkv with bias, exact-erf GELU, LayerScale, no registers for the
plain `dinov2_vit*14` models.
"""

from __future__ import annotations

import keras
from keras import ops

PATCH_SIZE = 14
VARIANTS = {"small": (384, 12, 6), "base": (768, 12, 12)}  # embed dim, depth, heads
PRETRAINING_GRID = 37  # 518 / 14
INTERPOLATE_OFFSET = 0.1
LAYER_NORM_EPSILON = 1e-6
CUBIC_A = -0.75  # torch's bicubic coefficient


def _cubic_weights(t):
    """The four cubic-convolution weights of taps -1, 0, 1, 2 at fraction `t` (Keys, A = -0.75)."""
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def interpolation_matrix(out_size, in_size: int, offset: float = INTERPOLATE_OFFSET):
    """`[out_size, in_size]` float32 matrix of torch's bicubic upsampling along one axis with
    `scale_factor = (out_size + offset) / in_size` (align_corners=False, borders clamped).

    `out_size` may be a symbolic tensor (the image's patch grid at run time).
    """
    # torch takes 1 / scale_factor in double and maps coordinates with it in float32.
    scale = ops.cast(1.0 / ((ops.cast(out_size, "float64") + offset) / in_size), "float32")
    source = scale * (ops.cast(ops.arange(out_size), "float32") + 0.5) - 0.5
    base = ops.floor(source)
    fraction = source - base
    matrix = 0.0
    for tap, weight in zip((-1, 0, 1, 2), _cubic_weights(fraction), strict=True):
        index = ops.clip(ops.cast(base, "int32") + tap, 0, in_size - 1)
        matrix = matrix + ops.one_hot(index, in_size, dtype="float32") * weight[:, None]
    return matrix


def interpolate_position_embeddings(patch_embeddings, grid_size: int, height, width):
    """`[M*M, D]` embeddings of an M x M grid -> `[height*width, D]` for a height x width grid."""
    depth = patch_embeddings.shape[-1]
    grid = ops.reshape(patch_embeddings, (grid_size, grid_size, depth))
    rows = interpolation_matrix(height, grid_size)  # [h, M]
    cols = interpolation_matrix(width, grid_size)  # [w, M]
    resized = ops.einsum("hm,mnd,wn->hwd", rows, grid, cols)
    return ops.reshape(resized, (-1, depth))


def exact_gelu(x):
    """`x * Phi(x)` with erf (torch's `nn.GELU()`); written out because TensorFlow's exact gelu
    uses erfc, which ONNX has no operator for."""
    return 0.5 * x * (1.0 + ops.erf(x * (2.0**-0.5)))


def _layer_norm(x, gamma, beta):
    x = ops.cast(x, "float32")
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * ops.rsqrt(variance + LAYER_NORM_EPSILON) * gamma + beta


@keras.saving.register_keras_serializable(package="sare_tf")
class ViTTokens(keras.layers.Layer):
    """Patch map `[B, h, w, D]` -> `[B, 1 + h*w, D]`: the [CLS] token first, position embeddings
    (of a `grid_size`-square grid, interpolated to h x w as torch does) added.

    Args:
        grid_size: M, the side of the grid the position embeddings were learnt for.
        **kwargs: base layer arguments.
    """

    def __init__(self, grid_size: int = PRETRAINING_GRID, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = int(grid_size)

    def build(self, input_shape):
        depth = int(input_shape[-1])
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(name="cls_token", shape=(1, 1, depth), initializer=init)
        self.pos_embed = self.add_weight(
            name="pos_embed", shape=(1, 1 + self.grid_size**2, depth), initializer=init
        )

    def call(self, patches):
        batch, height, width = ops.shape(patches)[0], ops.shape(patches)[1], ops.shape(patches)[2]
        depth = patches.shape[-1]
        tokens = ops.reshape(patches, (batch, -1, depth))
        pos = ops.cast(self.pos_embed[0], "float32")
        # The authors' code uses the learnt embeddings as they are on their own grid (images are
        # multiples of 14, so an M x M patch grid means a square image of that size).
        patch_pos = ops.cond(
            ops.logical_and(ops.equal(height, self.grid_size), ops.equal(width, self.grid_size)),
            lambda: pos[1:],
            lambda: interpolate_position_embeddings(pos[1:], self.grid_size, height, width),
        )
        pos = ops.concatenate([pos[:1], patch_pos], axis=0)
        cls = ops.broadcast_to(ops.cast(self.cls_token, tokens.dtype), (batch, 1, depth))
        return ops.concatenate([cls, tokens], axis=1) + ops.cast(pos, tokens.dtype)[None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size}


@keras.saving.register_keras_serializable(package="sare_tf")
class ViTBlock(keras.layers.Layer):
    """One DINOv2 transformer block (pre-norm attention and MLP, each scaled by LayerScale).

    Softmax and the layer norms compute in float32 under any policy.

    Args:
        num_heads: attention heads (the embedding splits into `D / num_heads` per head).
        mlp_ratio: hidden size of the MLP over D.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_heads: int, mlp_ratio: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        hidden = int(dim * self.mlp_ratio)
        dense = keras.initializers.TruncatedNormal(stddev=0.02)

        def weight(name, shape, initializer):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.norm1_gamma, self.norm1_beta = (
            weight("norm1_gamma", (dim,), "ones"),
            weight("norm1_beta", (dim,), "zeros"),
        )
        self.qkv_kernel, self.qkv_bias = (
            weight("qkv_kernel", (dim, 3 * dim), dense),
            weight("qkv_bias", (3 * dim,), "zeros"),
        )
        self.proj_kernel, self.proj_bias = (
            weight("proj_kernel", (dim, dim), dense),
            weight("proj_bias", (dim,), "zeros"),
        )
        self.ls1 = weight("ls1_gamma", (dim,), "ones")
        self.norm2_gamma, self.norm2_beta = (
            weight("norm2_gamma", (dim,), "ones"),
            weight("norm2_beta", (dim,), "zeros"),
        )
        self.fc1_kernel, self.fc1_bias = (
            weight("fc1_kernel", (dim, hidden), dense),
            weight("fc1_bias", (hidden,), "zeros"),
        )
        self.fc2_kernel, self.fc2_bias = (
            weight("fc2_kernel", (hidden, dim), dense),
            weight("fc2_bias", (dim,), "zeros"),
        )
        self.ls2 = weight("ls2_gamma", (dim,), "ones")  # fmt: skip

    def _attention(self, x):
        batch, tokens, dim = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head_dim = dim // self.num_heads
        qkv = ops.matmul(x, self.qkv_kernel) + self.qkv_bias
        qkv = ops.transpose(
            ops.reshape(qkv, (batch, tokens, 3, self.num_heads, head_dim)), (2, 0, 3, 1, 4)
        )
        query, key, value = qkv[0], qkv[1], qkv[2]  # [B, heads, N, head_dim]
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * (head_dim**-0.5)
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
        out = ops.reshape(
            ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3)), (batch, tokens, dim)
        )
        return ops.matmul(out, self.proj_kernel) + self.proj_bias  # fmt: skip

    def call(self, x):
        dtype = x.dtype
        normed = ops.cast(_layer_norm(x, self.norm1_gamma, self.norm1_beta), dtype)
        x = x + self._attention(normed) * self.ls1
        normed = ops.cast(_layer_norm(x, self.norm2_gamma, self.norm2_beta), dtype)
        hidden = exact_gelu(ops.matmul(normed, self.fc1_kernel) + self.fc1_bias)
        return x + (ops.matmul(hidden, self.fc2_kernel) + self.fc2_bias) * self.ls2

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}


@keras.saving.register_keras_serializable(package="sare_tf")
class PatchTokenMap(keras.layers.Layer):
    """`[B, 1 + h*w, D]` tokens -> `[B, h, w, D]` patch-token map ([CLS] dropped), optionally
    after the final LayerNorm; the grid comes from the patch map the tokens were made of.

    Args:
        final_norm: apply the backbone's last LayerNorm (`norm`); BoQ crops before it.
        **kwargs: base layer arguments.
    """

    def __init__(self, final_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.final_norm = bool(final_norm)

    def build(self, input_shapes):
        dim = int(input_shapes[0][-1])
        if self.final_norm:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, inputs):
        tokens, patches = inputs
        if self.final_norm:
            tokens = ops.cast(_layer_norm(tokens, self.gamma, self.beta), tokens.dtype)
        shape = ops.shape(patches)
        return ops.reshape(tokens[:, 1:], (shape[0], shape[1], shape[2], tokens.shape[-1]))

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]

    def get_config(self):
        return {**super().get_config(), "final_norm": self.final_norm}


def dinov2_vit(
    inputs, variant: str = "base", final_norm: bool = False, tokens: bool = False, name=None
):
    """The DINOv2 ViT-`variant`/14 graph on preprocessed `inputs` (ImageNet mean/std).

    Returns a `keras.Model` from `inputs` to the `[B, H/14, W/14, D]` patch-token map
    ("patch_tokens"), or with `tokens=True` to `[B, 1 + H/14 * W/14, D]`, [CLS] first, after the
    final LayerNorm ("norm"), for aggregators that use the [CLS] token (MegaLoc's).
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown DINOv2 variant. Expected one of {sorted(VARIANTS)}. Received: {variant!r}"
        )
    dim, depth, heads = VARIANTS[variant]
    patches = keras.layers.Conv2D(dim, PATCH_SIZE, strides=PATCH_SIZE, name="patch_embed_proj")(
        inputs
    )
    x = ViTTokens(PRETRAINING_GRID, name="tokens")(patches)
    for index in range(depth):
        x = ViTBlock(heads, name=f"blocks_{index}")(x)
    if tokens:
        x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm")(x)
    else:
        x = PatchTokenMap(final_norm, name="patch_tokens")([x, patches])
    return keras.Model(inputs, x, name=name or f"dinov2_vit{variant[0]}14")
