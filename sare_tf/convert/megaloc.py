"""MegaLoc's release (`model.safetensors`) as a sare_tf model: DINOv2 ViT-B/14 + optimal-transport
aggregation with a scene token (`sare_tf.layers.Salad`) + Linear 16640 -> 8448 + L2.

The layout, as MegaLoc's `MegaLoc` module names its tensors (facts from its MIT-licensed code):
- `backbone.*`: its DINOv2 (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}.(norm1,
  attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma)`, `norm`); the final
  norm is applied and the [CLS] token used.
- `aggregator.agg.token_features.{0,2}` (Linear C -> 512 -> 256), `aggregator.agg.
  cluster_features.{0,3}` and `aggregator.agg.score.{0,3}` (1x1 convolutions C -> 512 -> 256 /
  64), `aggregator.agg.dust_bin` (a scalar), `aggregator.linear` (16640 -> 8448).
Pixels: ImageNet mean / std; the authors resize to multiples of 14 (record such an image size).
"""

from __future__ import annotations

import numpy as np

from sare_tf.convert.dinov2 import dinov2_layer_weights, load_layer_weights
from sare_tf.convert.vgg16_netvlad import expect_shape, refuse_unexpected
from sare_tf.layers import ImagePreprocessing, Salad
from sare_tf.model import PlaceEmbedding

AGG = "aggregator.agg."


def is_megaloc(state: dict) -> bool:
    return f"{AGG}dust_bin" in state and "backbone.cls_token" in state


def _dense(state, prefix, path, conv: bool = False) -> tuple:
    weight = expect_shape(
        state, f"{prefix}weight", (None, None, 1, 1) if conv else (None, None), path
    )
    weight = weight.reshape(weight.shape[0], weight.shape[1])
    return weight.T, expect_shape(state, f"{prefix}bias", (weight.shape[0],), path)


def import_megaloc(state: dict, path: str, image_size=None) -> tuple[PlaceEmbedding, dict]:
    """The `PlaceEmbedding` of a MegaLoc state dict (plain tensors, e.g. read from safetensors)."""
    dense = {
        "token_1": _dense(state, f"{AGG}token_features.0.", path),
        "token_2": _dense(state, f"{AGG}token_features.2.", path),
        "cluster_1": _dense(state, f"{AGG}cluster_features.0.", path, conv=True),
        "cluster_2": _dense(state, f"{AGG}cluster_features.3.", path, conv=True),
        "score_1": _dense(state, f"{AGG}score.0.", path, conv=True),
        "score_2": _dense(state, f"{AGG}score.3.", path, conv=True),
    }
    projection = _dense(state, "aggregator.linear.", path)
    settings = {
        "num_clusters": int(dense["score_2"][0].shape[1]),
        "cluster_dim": int(dense["cluster_2"][0].shape[1]),
        "token_dim": int(dense["token_2"][0].shape[1]),
        "mlp_dim": int(dense["token_1"][0].shape[1]),
        "output_dim": int(projection[0].shape[1]),
    }
    expected = {f"{AGG}dust_bin", "aggregator.linear.weight", "aggregator.linear.bias"}
    for module in ("token_features.0.", "token_features.2.", "cluster_features.0.",
                   "cluster_features.3.", "score.0.", "score.3."):  # fmt: skip
        expected |= {f"{AGG}{module}weight", f"{AGG}{module}bias"}
    refuse_unexpected(
        [k for k in state if k.startswith("aggregator.")], expected, path, "MegaLoc's aggregator"
    )
    backbone_keys = {k for k in state if k.startswith("backbone.blocks.")}
    backbone_keys |= {f"backbone.{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight",
                                                "patch_embed.proj.bias", "norm.weight", "norm.bias")}  # fmt: skip
    refuse_unexpected(
        [k for k in state if k.startswith("backbone.")], backbone_keys, path, "MegaLoc's DINOv2"
    )
    outside = sorted(k for k in state if not k.startswith(("backbone.", "aggregator.")))
    if outside:
        raise ValueError(f"{path}: unexpected keys for MegaLoc: {outside[:10]}")
    backbone_weights = dinov2_layer_weights(state, "backbone.", path, final_norm=True)
    model = PlaceEmbedding(
        "dinov2-vitb14-tokens",
        aggregator=Salad(**settings, name="salad"),
        preprocessing=ImagePreprocessing("torch", image_size=image_size, name="preprocess"),
        name=f"megaloc_{settings['output_dim']}",
    )
    backbone_weights["norm"] = backbone_weights.pop("patch_tokens")
    load_layer_weights(model, backbone_weights, path)
    salad = model.aggregator
    values = {}
    for name, pair in {**dense, "projection": projection}.items():
        values[f"{name}_kernel"], values[f"{name}_bias"] = pair
    values["dust_bin"] = expect_shape(state, f"{AGG}dust_bin", (), path)
    for variable in salad.weights:
        key = variable.name
        if tuple(variable.shape) != np.shape(values[key]):
            raise ValueError(
                f"{path}: aggregator weight {key} has shape {np.shape(values[key])}, expected {tuple(variable.shape)}."
            )
        variable.assign(np.asarray(values[key], np.float32))
    return model, {"backbone": "dinov2-vitb14-tokens", "descriptor_dim": settings["output_dim"]}
