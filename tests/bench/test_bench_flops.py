"""The convolution FLOP counter behind the benchmarks' efficiency lines, against hand counts."""

from __future__ import annotations

import keras
import pytest

from sare_tf.bench.flops import conv_flops, embedding_conv_flops, model_conv_flops


def test_conv_flops_is_two_multiply_adds_per_tap_channel_and_position():
    # 3x3 kernel, 4 input and 5 output channels, 6x7 output: 42 positions x 180 MACs.
    assert conv_flops((6, 7), (3, 3, 4, 5)) == 2 * 42 * 180
    with pytest.raises(ValueError, match="static"):
        conv_flops((None, 7), (3, 3, 4, 5))


def test_small_stack_matches_a_hand_count():
    inputs = keras.Input((8, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="same")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)  # 4x5: pooling costs nothing here
    x = keras.layers.Conv2D(6, 3, strides=2, padding="valid", name="strided")(x)
    inner_input = keras.Input((1, 2, 6))
    inner = keras.Model(
        inner_input,
        keras.layers.DepthwiseConv2D(1, depth_multiplier=2, name="depthwise")(inner_input),
        name="inner",
    )
    x = inner(x)
    x = keras.layers.Conv2D(3, 1, name="pointwise")(x)
    x = keras.layers.Conv2D(6, 1, groups=3, name="grouped", trainable=False)(x)
    model = keras.Model(inputs, x)

    counted = {c.name: c for c in model_conv_flops(model)}
    # same: 8x10 outputs, each 3*3 taps x 3 inputs x 4 outputs multiply-adds.
    assert counted["same"].flops == 2 * 80 * (9 * 3 * 4)
    # strided, valid: (4-3)//2+1 = 1 by (5-3)//2+1 = 2 outputs, 3*3 x 4 x 6 MACs each.
    assert counted["strided"].flops == 2 * 2 * (9 * 4 * 6)
    # depthwise 1x1, multiplier 2: each of the 6 channels makes 2 outputs from itself.
    assert counted["inner/depthwise"].flops == 2 * 2 * (6 * 2)
    assert counted["pointwise"].flops == 2 * 2 * (12 * 3)
    # 3 groups: each of the 6 outputs reads only its group's 1 input channel.
    assert counted["grouped"].flops == 2 * 2 * (6 * 1)
    assert [c.trainable for c in counted.values()] == [True, True, True, True, False]


def _vgg16_conv_flops_by_hand(height, width):
    """VGG16's 13 convolutions (3x3, 'same'), each block at half the previous resolution."""
    blocks = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
    total, conv5, channels = 0, 0, 3
    for block, widths in enumerate(blocks):
        positions = (height >> block) * (width >> block)
        for out_channels in widths:
            flops = 2 * positions * 9 * channels * out_channels
            total += flops
            conv5 += flops if block == 4 else 0
            channels = out_channels
    return total, conv5


def test_vgg16_to_conv5_3_costs_188_gflop_at_480x640():
    counted = embedding_conv_flops("vgg16", (480, 640))
    total, conv5 = _vgg16_conv_flops_by_hand(480, 640)
    assert counted["layers"] == 13
    assert counted["flops"] == total
    assert counted["flops"] == pytest.approx(188e9, rel=0.01)
    # Trainable by default from block5_conv1: conv5's three layers.
    assert counted["trainable_flops"] == conv5
    assert (
        embedding_conv_flops("vgg16", (480, 640), trainable_from=None)["trainable_flops"] == total
    )


def test_a_model_without_a_fixed_input_size_is_refused():
    from sare_tf.models import build_embedding_model

    model = build_embedding_model("tiny", num_clusters=2)
    with pytest.raises(ValueError, match="fixed input_shape"):
        model_conv_flops(model)
