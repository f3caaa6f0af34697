"""Floating-point operations of a model's convolutions, to read throughput against the hardware peak.

A convolution computes, at each output position, one multiply-add per kernel tap and input
channel of its group for every output channel; counting a multiply-add as 2 FLOPs,

    FLOPs = 2 * (output positions) * (kernel taps) * (input channels / groups) * (output channels)

which is `2 * prod(output spatial shape) * prod(kernel shape)` for a Keras kernel laid out as
`kernel_size + (in_channels / groups, out_channels)` (depthwise kernels,
`kernel_size + (in_channels, multiplier)`, give the same product). Zero-padded taps count, as
in the usual VGG16 figure: 15.4 GMAC at 224x224, i.e. ~188 GFLOP per 480x640 image up to
conv5_3. Bias additions, activations, pooling and NetVLAD (under 0.1% of VGG16's work at
480x640) are not counted: the figure is the convolution work the hardware peak is measured on.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class ConvFlops:
    """One convolution layer's forward cost for one image.

    Attributes:
        name: the layer's name (nested models' layers as "outer/inner").
        flops: forward FLOPs per image (2 x multiply-adds).
        trainable: whether the layer's weights are trained.
    """

    name: str
    flops: int
    trainable: bool


def conv_flops(output_spatial: tuple[int, ...], kernel_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one convolution for one image.

    Args:
        output_spatial: the output's spatial shape, e.g. `(height, width)`.
        kernel_shape: the Keras kernel shape, e.g. `(3, 3, in_channels / groups, out_channels)`.

    Returns:
        `2 * prod(output_spatial) * prod(kernel_shape)`.
    """
    if any(d is None or d <= 0 for d in (*output_spatial, *kernel_shape)):
        raise ValueError(
            "Convolution FLOPs need static, positive shapes. Received: "
            f"output_spatial={tuple(output_spatial)}, kernel_shape={tuple(kernel_shape)}"
        )
    return 2 * math.prod(int(d) for d in output_spatial) * math.prod(int(d) for d in kernel_shape)


def _is_convolution(layer) -> bool:
    import keras

    kinds = (
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
        keras.layers.DepthwiseConv1D,
        keras.layers.DepthwiseConv2D,
    )
    return isinstance(layer, kinds) and not isinstance(
        layer, keras.layers.Conv2DTranspose | keras.layers.Conv1DTranspose
    )


def model_conv_flops(model, prefix: str = "") -> list[ConvFlops]:
    """The forward FLOPs per image of every convolution layer of a functional model.

    Args:
        model: a built functional `keras.Model` whose input has a fixed spatial size (build the
            sare_tf embedding model with `input_shape=(H, W, 3)`); nested models are walked.
        prefix: name prefix for nested layers.

    Returns:
        One `ConvFlops` per convolution layer, in the model's layer order.

    Example:
        >>> from sare_tf.models import build_embedding_model
        >>> model = build_embedding_model("vgg16", input_shape=(480, 640, 3))
        >>> round(sum(c.flops for c in model_conv_flops(model)) / 1e9, 1)
        187.9
    """
    import keras

    counted = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            counted += model_conv_flops(layer, prefix=f"{prefix}{layer.name}/")
        elif _is_convolution(layer):
            try:
                output_shape = tuple(layer.output.shape)
            except (AttributeError, ValueError) as error:
                raise ValueError(
                    f"Cannot count FLOPs of layer {layer.name!r}: it needs exactly one call in "
                    f"the model graph. Received: {error}"
                ) from error
            channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
            spatial = output_shape[1:-1] if channels_last else output_shape[2:]
            if any(d is None for d in spatial):
                raise ValueError(
                    f"Layer {layer.name!r} has no static output size; build the model with a "
                    f"fixed input_shape, e.g. (480, 640, 3). Received: output shape {output_shape}"
                )
            counted.append(
                ConvFlops(
                    f"{prefix}{layer.name}",
                    conv_flops(spatial, tuple(layer.kernel.shape)),
                    bool(layer.trainable),
                )
            )
    return counted


def embedding_conv_flops(
    backbone: str,
    image_size: tuple[int, int],
    num_clusters: int = 64,
    trainable_from: str | None = "default",
) -> dict:
    """Forward convolution FLOPs per image of a sare_tf embedding model at one image size.

    Builds the model with random weights (no download) at `image_size` and counts its
    convolutions; the dtype policy does not change the count.

    Args:
        backbone: a `sare_tf.models.BACKBONES` key.
        image_size: `(height, width)`.
        num_clusters: NetVLAD K (does not change the count; kept for the build).
        trainable_from: as in `build_embedding_model`; splits the count into trainable and frozen.

    Returns:
        `{"flops": all convolutions, "trainable_flops": those of trainable layers,
        "layers": number of convolution layers}`, FLOPs per image.
    """
    from sare_tf.models import build_embedding_model

    height, width = image_size
    model = build_embedding_model(
        backbone,
        num_clusters=num_clusters,
        weights=None,
        trainable_from=trainable_from,
        input_shape=(height, width, 3),
    )
    counted = model_conv_flops(model)
    return {
        "flops": sum(c.flops for c in counted),
        "trainable_flops": sum(c.flops for c in counted if c.trainable),
        "layers": len(counted),
    }
