"""Bag-of-Queries releases (`resnet50_16384.pth`, `dinov2_12288.pth`) as sare_tf models.

The layout, as BoQ's `VPRModel` saves it (facts from its MIT-licensed code): a plain state dict,

- ResNet-50: `backbone.net.{0,1,4,5,6}.*` = torchvision's conv1, bn1, layer1 ... layer3 (cropped
  after layer3; 1024 channels, stride 16); trained and tested at 384 x 384 (in the release notes)
  with ImageNet mean / std.
- DINOv2: `backbone.dino.*` = facebookresearch's ViT-B/14 (`cls_token`, `pos_embed`,
  `mask_token`, `patch_embed.proj`, `blocks.{i}`, `norm`); the patch tokens are taken before the
  final norm; 322 x 322.
- `aggregator.proj_c.{weight [C, C_in, 3, 3], bias}`, `aggregator.norm_input`,
  `aggregator.boqs.{i}.{encoder.(self_attn.in_proj_weight [3C, C], self_attn.in_proj_bias,
  self_attn.out_proj, linear1 [4C, C], linear2, norm1, norm2), queries [1, Q, C], self_attn,
  norm_q, cross_attn, norm_out}`, `aggregator.fc.{weight [row_dim, L*Q], bias}`.
"""

from __future__ import annotations

import numpy as np

from sare_tf.convert.dinov2 import dinov2_layer_weights, load_layer_weights
from sare_tf.convert.resnet_gem import load_resnet_weights, resnet_layer_weights
from sare_tf.convert.vgg16_netvlad import expect_shape, refuse_unexpected
from sare_tf.layers import BoQ, ImagePreprocessing
from sare_tf.model import PlaceEmbedding

PREFIX = "aggregator."
VIT_BY_DIM = {384: "dinov2-vits14", 768: "dinov2-vitb14"}
ATTENTION_KEYS = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def is_boq(state: dict) -> bool:
    return f"{PREFIX}proj_c.weight" in state and f"{PREFIX}boqs.0.queries" in state


def _attention(state, prefix, dim, path) -> dict:
    return {
        "in_kernel": expect_shape(state, f"{prefix}in_proj_weight", (3 * dim, dim), path).T,
        "in_bias": expect_shape(state, f"{prefix}in_proj_bias", (3 * dim,), path),
        "out_kernel": expect_shape(state, f"{prefix}out_proj.weight", (dim, dim), path).T,
        "out_bias": expect_shape(state, f"{prefix}out_proj.bias", (dim,), path),
    }


def _norm(state, prefix, dim, path) -> tuple:
    return (
        expect_shape(state, f"{prefix}weight", (dim,), path),
        expect_shape(state, f"{prefix}bias", (dim,), path),
    )


def _dense(state, prefix, fan_in, fan_out, path) -> tuple:
    return (
        expect_shape(state, f"{prefix}weight", (fan_out, fan_in), path).T,
        expect_shape(state, f"{prefix}bias", (fan_out,), path),
    )


def boq_settings(state: dict, path: str) -> dict:
    """`BoQ` constructor arguments read off the aggregator's tensor shapes."""
    proj = expect_shape(state, f"{PREFIX}proj_c.weight", (None, None, 3, 3), path)
    queries = expect_shape(state, f"{PREFIX}boqs.0.queries", (1, None, proj.shape[0]), path)
    num_layers = 0
    while f"{PREFIX}boqs.{num_layers}.queries" in state:
        num_layers += 1
    fc = expect_shape(state, f"{PREFIX}fc.weight", (None, num_layers * queries.shape[1]), path)
    return {
        "proj_channels": int(proj.shape[0]),
        "num_queries": int(queries.shape[1]),
        "num_layers": num_layers,
        "row_dim": int(fc.shape[0]),
    }


def set_boq_weights(layer: BoQ, state: dict, path: str) -> None:
    """Assigns every tensor of the aggregator to `layer`'s variables (built), checked by shape."""
    c, p = layer.proj_channels, PREFIX
    values = {
        id(layer.proj_kernel): expect_shape(state, f"{p}proj_c.weight", (c, None, 3, 3), path).transpose(2, 3, 1, 0),
        id(layer.proj_bias): expect_shape(state, f"{p}proj_c.bias", (c,), path),
    }  # fmt: skip

    def assign(variables, arrays):
        for variable, array in zip(variables, arrays, strict=True):
            values[id(variable)] = array

    assign(layer.norm_input, _norm(state, f"{p}norm_input.", c, path))
    for index, block in enumerate(layer.blocks):
        b = f"{p}boqs.{index}."
        values[id(block["queries"])] = expect_shape(
            state, f"{b}queries", (1, layer.num_queries, c), path
        )
        encoder = block["encoder"]
        for name, target in (("encoder.self_attn.", encoder["self_attn"]), ("self_attn.", block["self_attn"]),
                             ("cross_attn.", block["cross_attn"])):  # fmt: skip
            source = _attention(state, b + name, c, path)
            assign([target[k] for k in source], source.values())
        for name, target in (("encoder.norm1.", encoder["norm1"]), ("encoder.norm2.", encoder["norm2"]),
                             ("norm_q.", block["norm_q"]), ("norm_out.", block["norm_out"])):  # fmt: skip
            assign(target, _norm(state, b + name, c, path))
        assign(encoder["linear1"], _dense(state, f"{b}encoder.linear1.", c, 4 * c, path))
        assign(encoder["linear2"], _dense(state, f"{b}encoder.linear2.", 4 * c, c, path))
    assign(
        layer.fc,
        _dense(state, f"{p}fc.", layer.num_layers * layer.num_queries, layer.row_dim, path),
    )
    for variable in layer.weights:
        variable.assign(np.asarray(values[id(variable)], np.float32))


def _expected_aggregator_keys(settings: dict) -> set:
    keys = {f"{PREFIX}{k}" for k in ("proj_c.weight", "proj_c.bias", "norm_input.weight",
                                      "norm_input.bias", "fc.weight", "fc.bias")}  # fmt: skip
    for index in range(settings["num_layers"]):
        b = f"{PREFIX}boqs.{index}."
        keys.add(f"{b}queries")
        for attention in ("encoder.self_attn.", "self_attn.", "cross_attn."):
            keys |= {b + attention + k for k in ATTENTION_KEYS}
        for norm in ("encoder.norm1.", "encoder.norm2.", "norm_q.", "norm_out."):
            keys |= {f"{b}{norm}weight", f"{b}{norm}bias"}
        for dense in ("encoder.linear1.", "encoder.linear2."):
            keys |= {f"{b}{dense}weight", f"{b}{dense}bias"}
    return keys


def import_boq(state: dict, path: str, image_size=None) -> tuple[PlaceEmbedding, dict]:
    """The `PlaceEmbedding` (ResNet-50 to layer3 or DINOv2 ViT-B/14, + BoQ) of a BoQ release."""
    settings = boq_settings(state, path)
    refuse_unexpected(
        [k for k in state if k.startswith(PREFIX)], _expected_aggregator_keys(settings), path,
        "a BoQ aggregator",
    )  # fmt: skip
    if "backbone.dino.cls_token" in state:
        prefix = "backbone.dino."
        dim = int(np.shape(state[f"{prefix}cls_token"])[-1])
        if dim not in VIT_BY_DIM:
            raise ValueError(
                f"{path}: a DINOv2 of width {dim}; sare_tf has ViT-S/14 (384) and ViT-B/14 (768)."
            )
        backbone = VIT_BY_DIM[dim]
        extra_keys = {f"{prefix}mask_token", f"{prefix}norm.weight", f"{prefix}norm.bias"}
        weights = dinov2_layer_weights(state, prefix, path)
        expected = extra_keys | {f"{prefix}{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")}  # fmt: skip
        expected |= {k for k in state if k.startswith(f"{prefix}blocks.")}
        refuse_unexpected(
            [k for k in state if k.startswith("backbone.")], expected, path, "a DINOv2 backbone"
        )
    elif "backbone.net.0.weight" in state:
        backbone, prefix = "resnet50-layer3", "backbone.net."
        weights = resnet_layer_weights(state, prefix)
    else:
        raise ValueError(
            f"{path}: a BoQ aggregator without a backbone sare_tf knows: neither 'backbone.net.' "
            "(ResNet-50) nor 'backbone.dino.' (DINOv2) keys."
        )
    model = PlaceEmbedding(
        backbone,
        aggregator=BoQ(**settings, name="boq"),
        preprocessing=ImagePreprocessing("torch", image_size=image_size, name="preprocess"),
        name=f"{backbone}_boq{settings['proj_channels'] * settings['row_dim']}",
    )
    if backbone.startswith("dinov2"):
        load_layer_weights(model, weights, path)
    else:
        load_resnet_weights(model, weights, path)
    set_boq_weights(model.aggregator, state, path)
    return model, {"backbone": backbone, "descriptor_dim": model.descriptor_size, **settings}
