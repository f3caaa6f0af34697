"""CosPlace and EigenPlaces releases (ResNet + GeM + FC) as sare_tf models.

The layout, as both projects' `GeoLocalizationNet` saves it (facts from their MIT-licensed
code; the release assets are named `{backbone}_{dim}_cosplace.pth` /
`{backbone}_{dim}_eigenplaces.pth`): a plain state dict,

- `backbone.{i}.*`: `nn.Sequential` of torchvision ResNet children up to layer4, so
  `backbone.0` = conv1 `[64, 3, 7, 7]`, `backbone.1` = bn1, `backbone.4` ... `backbone.7` =
  layer1 ... layer4 (`backbone.5.0.downsample.0.weight`, ...); children 2 and 3 (ReLU, max-pool)
  hold no tensors. BatchNorm tensors: weight, bias, running_mean, running_var,
  num_batches_tracked.
- `aggregation.1.p` `[1]`: GeM's exponent (`aggregation` = Sequential(L2Norm, GeM, Flatten,
  Linear, L2Norm)); `aggregation.3.weight` `[F, D]`, `aggregation.3.bias` `[F]`: the Linear.

Inference: RGB scaled to [0, 1], ImageNet mean / std, full resolution; per-location L2 over the
channels, GeM (clamp 1e-6), Linear, L2 (`sare_tf.layers.GeM`).
"""

from __future__ import annotations

import numpy as np

from sare_tf.convert.vgg16_netvlad import expect_shape, refuse_unexpected
from sare_tf.layers import GeM, ImagePreprocessing
from sare_tf.model import PlaceEmbedding
from sare_tf.model.torchvision_resnet import DEPTHS, keras_layer_name

# Children of torchvision's ResNet kept by `nn.Sequential(*list(resnet.children())[:-2])`.
RESNET_CHILDREN = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def is_resnet_gem(state: dict) -> bool:
    """True for a CosPlace / EigenPlaces ResNet state dict (its conv1 and its GeM exponent)."""
    conv1 = state.get("backbone.0.weight")
    return conv1 is not None and tuple(conv1.shape) == (64, 3, 7, 7) and "aggregation.1.p" in state


def resnet_depth(state: dict, prefix: str, path: str) -> int:
    """The torchvision depth whose blocks per stage and block type the keys show."""
    blocks = []
    for child in ("4", "5", "6", "7"):
        indices = {
            int(key[len(f"{prefix}{child}.") :].split(".")[0])
            for key in state
            if key.startswith(f"{prefix}{child}.")
        }
        blocks.append(len(indices))
    kind = "bottleneck" if f"{prefix}4.0.conv3.weight" in state else "basic"
    for depth, (depth_kind, depth_blocks) in DEPTHS.items():
        if depth_kind == kind and tuple(blocks) == depth_blocks:
            return depth
    raise ValueError(
        f"{path}: the backbone's blocks per stage {blocks} ({kind} blocks) match no torchvision "
        f"ResNet ({', '.join(f'resnet{d}: {b}' for d, (_, b) in DEPTHS.items())})."
    )


def resnet_layer_weights(state: dict, prefix: str) -> dict[str, list[np.ndarray]]:
    """`{Keras layer name: weights in Keras order}` of the ResNet under `prefix`.

    Convolutions `[O, I, kh, kw]` -> `[kh, kw, I, O]`; BatchNorm (weight, bias, running mean,
    running var) -> (gamma, beta, moving mean, moving variance); `num_batches_tracked` is dropped.
    """
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith("num_batches_tracked"):
            continue
        child, _, rest = key[len(prefix) :].partition(".")
        module, _, tensor = f"{RESNET_CHILDREN.get(child, child)}.{rest}".rpartition(".")
        layers.setdefault(keras_layer_name(module), {})[tensor] = np.asarray(value, np.float32)
    weights = {}
    for name, tensors in layers.items():
        if set(tensors) == {"weight"}:
            weights[name] = [tensors["weight"].transpose(2, 3, 1, 0)]
        else:
            weights[name] = [tensors.get(t) for t in BN_TENSORS]
    return weights


def load_resnet_weights(model, weights: dict[str, list[np.ndarray]], path: str) -> None:
    """Sets every backbone layer of `model` from `weights`; names what is missing or mis-shaped."""
    backbone = {
        layer.name: layer
        for layer in model.layers
        if layer.weights and layer.name.startswith(("conv1", "bn1", "layer"))
    }
    missing = sorted(set(backbone) - set(weights))
    if missing:
        raise ValueError(
            f"{path}: the checkpoint has no tensors for backbone layers {missing[:10]}."
        )
    unexpected = sorted(set(weights) - set(backbone))
    if unexpected:
        raise ValueError(f"{path}: unexpected backbone tensors for modules {unexpected[:10]}.")
    for name, layer in backbone.items():
        arrays = weights[name]
        wanted = [tuple(w.shape) for w in layer.weights]
        got = [None if a is None else tuple(a.shape) for a in arrays]
        if got != wanted:
            raise ValueError(
                f"{path}: backbone module {name.replace('_', '.')} has tensors of shapes {got} "
                f"(Keras layout), expected {wanted}."
            )
        layer.set_weights(arrays)


def import_resnet_gem(state: dict, path: str, image_size=None) -> tuple[PlaceEmbedding, dict]:
    """The `PlaceEmbedding` (torchvision ResNet + GeM + FC) holding a CosPlace / EigenPlaces
    state dict, and what the sidecar records of it."""
    depth = resnet_depth(state, "backbone.", path)
    p = expect_shape(state, "aggregation.1.p", (1,), path)
    fc_weight = expect_shape(state, "aggregation.3.weight", (None, None), path)
    output_dim, channels = fc_weight.shape
    fc_bias = expect_shape(state, "aggregation.3.bias", (output_dim,), path)
    refuse_unexpected(
        [k for k in state if not k.startswith("backbone.")],
        {"aggregation.1.p", "aggregation.3.weight", "aggregation.3.bias"},
        path,
        "a CosPlace / EigenPlaces aggregation",
    )
    model = PlaceEmbedding(
        f"resnet{depth}",
        aggregator=GeM(int(output_dim), p=float(p[0]), name="gem"),
        preprocessing=ImagePreprocessing("torch", image_size=image_size, name="preprocess"),
        name=f"resnet{depth}_gem{output_dim}",
    )
    if int(model.aggregator.input.shape[-1]) != channels:
        raise ValueError(
            f"{path}: 'aggregation.3.weight' takes {channels} channels; resnet{depth}'s layer4 "
            f"gives {int(model.aggregator.input.shape[-1])}."
        )
    load_resnet_weights(model, resnet_layer_weights(state, "backbone."), path)
    model.aggregator.set_weights([p, fc_weight.T, fc_bias])
    return model, {"backbone": f"resnet{depth}", "descriptor_dim": int(output_dim)}
