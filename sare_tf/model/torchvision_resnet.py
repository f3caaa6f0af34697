"""ResNets that compute what torchvision's `resnet18` ... `resnet152` compute, in Keras.

`keras.applications.ResNet50` is a different network for ported weights: it strides the first
1x1 convolution of a bottleneck (torchvision, "ResNet v1.5", strides the 3x3), its convolutions
have biases, it pads "same" (asymmetric for even sizes) and its BatchNorm epsilon is 1.001e-5.
This graph follows torchvision exactly:

    conv1 7x7/2 (pad 3) - bn1 - relu - maxpool 3x3/2 (pad 1) - layer1 ... layer4

with blocks `BasicBlock` (ResNet-18/34: two 3x3) or `Bottleneck` (ResNet-50/101/152: 1x1, 3x3
with the stride, 1x1 x4), a 1x1/stride + BatchNorm shortcut ("downsample") where the shape
changes, explicit symmetric zero padding before every spatial convolution ("valid" after it),
no convolution bias, BatchNorm epsilon 1e-5 and momentum 0.9 (torch's 0.1).

Layer names are torchvision's module paths with "." replaced by "_" (`layer3_0_conv2`,
`layer3_0_downsample_0` for the shortcut convolution, `layer3_0_downsample_1` for its BatchNorm),
so an importer maps a state-dict key to its layer by that rule (`keras_layer_name`). Each block's
output (after the residual sum and ReLU) is `layer{stage}_{block}_out`.

Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; torchvision's
`models/resnet.py` (BSD-3-Clause) for the v1.5 layout.
"""

from __future__ import annotations

import keras

from sare_tf.layers.conv2d import Conv2D

# Blocks per stage and the block type of each depth, as torchvision's constructors set them.
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras keeps `momentum` of the old value; torch's momentum=0.1 is the new one


def keras_layer_name(torch_module_path: str) -> str:
    """The Keras layer of a torchvision module path: "layer1.0.conv1" -> "layer1_0_conv1"."""
    return torch_module_path.replace(".", "_")


def block_output_name(stage: int, block: int) -> str:
    """Name of block `block` (0-based) of `layer{stage}`'s output, after the residual ReLU."""
    return f"layer{stage}_{block}_out"


def stage_output_name(depth: int, stage: int) -> str:
    """The layer whose output is the output of `layer{stage}` (its last block's)."""
    return block_output_name(stage, DEPTHS[depth][1][stage - 1] - 1)


def channels_after(depth: int, stage: int) -> int:
    """Channels of `layer{stage}`'s output (x4 for bottleneck ResNets)."""
    expansion = 4 if DEPTHS[depth][0] == "bottleneck" else 1
    return STAGE_WIDTHS[stage - 1] * expansion


def _conv(x, filters: int, size: int, stride: int, name: str):
    if size > 1:
        x = keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
    return Conv2D(filters, size, strides=stride, use_bias=False, name=name)(x)


def _bn(x, name: str):
    return keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def _block(x, kind: str, width: int, stride: int, prefix: str, out_name: str):
    """One torchvision BasicBlock / Bottleneck; `prefix` like "layer2_0"."""
    expansion = 4 if kind == "bottleneck" else 1
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != width * expansion:
        shortcut = _conv(x, width * expansion, 1, stride, f"{prefix}_downsample_0")
        shortcut = _bn(shortcut, f"{prefix}_downsample_1")
    if kind == "basic":
        y = _conv(x, width, 3, stride, f"{prefix}_conv1")
        y = keras.layers.ReLU(name=f"{prefix}_relu1")(_bn(y, f"{prefix}_bn1"))
        y = _bn(_conv(y, width, 3, 1, f"{prefix}_conv2"), f"{prefix}_bn2")
    else:
        y = _conv(x, width, 1, 1, f"{prefix}_conv1")
        y = keras.layers.ReLU(name=f"{prefix}_relu1")(_bn(y, f"{prefix}_bn1"))
        y = _conv(y, width, 3, stride, f"{prefix}_conv2")
        y = keras.layers.ReLU(name=f"{prefix}_relu2")(_bn(y, f"{prefix}_bn2"))
        y = _bn(_conv(y, width * expansion, 1, 1, f"{prefix}_conv3"), f"{prefix}_bn3")
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=out_name)(y)


def torchvision_resnet(inputs, depth: int, last_stage: int = 4, name: str | None = None):
    """The torchvision ResNet-`depth` graph on `inputs`, up to `layer{last_stage}` (no pooling,
    no classifier).

    Args:
        inputs: the preprocessed image tensor `[B, H, W, 3]` (ImageNet mean/std, "torch" mode).
        depth: 18, 34, 50, 101 or 152.
        last_stage: the last residual stage kept (3 crops after layer3, as BoQ does; 4 keeps all,
            as CosPlace and EigenPlaces do).
        name: model name (default "resnet{depth}").

    Returns:
        A `keras.Model` from `inputs` to the output of `layer{last_stage}` (stride 32 after
        layer4, 16 after layer3).
    """
    if depth not in DEPTHS:
        raise ValueError(
            f"Unknown ResNet depth. Expected one of {sorted(DEPTHS)}. Received: {depth}"
        )
    if last_stage not in (1, 2, 3, 4):
        raise ValueError(f"`last_stage` must be 1-4. Received: last_stage={last_stage!r}")
    kind, blocks = DEPTHS[depth]
    x = _conv(inputs, 64, 7, 2, "conv1")
    x = keras.layers.ReLU(name="relu")(_bn(x, "bn1"))
    # Zero padding equals torch's -inf padding here: the max-pool's inputs are >= 0 after ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage in range(1, last_stage + 1):
        for block in range(blocks[stage - 1]):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _block(
                x, kind, STAGE_WIDTHS[stage - 1], stride, f"layer{stage}_{block}",
                block_output_name(stage, block),
            )  # fmt: skip
    return keras.Model(inputs, x, name=name or f"resnet{depth}")
