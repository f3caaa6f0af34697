"""DINOv2 ViT/14 state dicts (facebookresearch/dinov2's `DinoVisionTransformer` keys) as the
weights of `sare_tf.model.dinov2_vit`'s layers.

Keys under a prefix (BoQ: `backbone.dino.`; MegaLoc: `backbone.`): `cls_token` [1, 1, D],
`pos_embed` [1, 1 + M*M, D], `mask_token` [1, D] (training only, not used),
`patch_embed.proj.{weight [D, 3, 14, 14], bias}`, per block `blocks.{i}.` + `norm1`,
`attn.qkv` [3D, D], `attn.proj`, `ls1.gamma`, `norm2`, `mlp.fc1` [4D, D], `mlp.fc2`,
`ls2.gamma`; `norm.{weight, bias}` (the final LayerNorm).
"""

from __future__ import annotations

import numpy as np

from sare_tf.convert.vgg16_netvlad import expect_shape

BLOCK_TENSORS = (
    ("norm1.weight", False),
    ("norm1.bias", False),
    ("attn.qkv.weight", True),
    ("attn.qkv.bias", False),
    ("attn.proj.weight", True),
    ("attn.proj.bias", False),
    ("ls1.gamma", False),
    ("norm2.weight", False),
    ("norm2.bias", False),
    ("mlp.fc1.weight", True),
    ("mlp.fc1.bias", False),
    ("mlp.fc2.weight", True),
    ("mlp.fc2.bias", False),
    ("ls2.gamma", False),
)  # fmt: skip  (torch name, Linear weight to transpose); the order of ViTBlock's weights


def vit_depth(state: dict, prefix: str) -> int:
    """The number of transformer blocks under `prefix`."""
    depth = 0
    while f"{prefix}blocks.{depth}.norm1.weight" in state:
        depth += 1
    return depth


def dinov2_layer_weights(state: dict, prefix: str, path: str, final_norm: bool = False) -> dict:
    """`{Keras layer name: weights in Keras order}` of the DINOv2 ViT under `prefix`.

    Every tensor is checked by name and shape (the embedding size D from `cls_token`); what is
    missing or mis-shaped is named with the file.
    """
    dim = expect_shape(state, f"{prefix}cls_token", (1, 1, None), path).shape[-1]
    patch_kernel = expect_shape(state, f"{prefix}patch_embed.proj.weight", (dim, 3, 14, 14), path)
    weights = {
        "patch_embed_proj": [
            patch_kernel.transpose(2, 3, 1, 0),
            expect_shape(state, f"{prefix}patch_embed.proj.bias", (dim,), path),
        ],
        "tokens": [
            expect_shape(state, f"{prefix}cls_token", (1, 1, dim), path),
            expect_shape(state, f"{prefix}pos_embed", (1, None, dim), path),
        ],
    }
    for index in range(vit_depth(state, prefix)):
        block = f"{prefix}blocks.{index}."
        arrays = []
        for name, transpose in BLOCK_TENSORS:
            value = (
                np.asarray(state.get(block + name), np.float32) if block + name in state else None
            )
            if value is None:
                raise ValueError(f"{path}: the checkpoint has no {block + name!r}.")
            arrays.append(value.T if transpose else value)
        weights[f"blocks_{index}"] = arrays
    if final_norm:
        weights["patch_tokens"] = [
            expect_shape(state, f"{prefix}norm.weight", (dim,), path),
            expect_shape(state, f"{prefix}norm.bias", (dim,), path),
        ]
    return weights


def load_layer_weights(model, weights: dict, path: str) -> None:
    """Sets each named backbone layer of `model`; a backbone layer the checkpoint has no tensors
    for (a shallower network), or a wrong shape, is named with the layer."""
    backbone = [layer.name for layer in model.feature_model().layers if layer.weights]
    missing = [name for name in backbone if name not in weights]
    if missing:
        raise ValueError(
            f"{path}: the checkpoint has no tensors for backbone layers {missing[:10]} "
            f"({len(missing)} of {len(backbone)}; e.g. fewer transformer blocks than the model)."
        )
    for name, arrays in weights.items():
        layer = model.get_layer(name)
        wanted = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if wanted != got:
            raise ValueError(
                f"{path}: layer {name} takes shapes {wanted}; the checkpoint gives {got}."
            )
        layer.set_weights(arrays)
