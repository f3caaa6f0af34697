"""Keras' Conv2D, trained with the input gradient of stride-1 convolutions computed as a
forward convolution.

TensorFlow's CPU kernel for `Conv2DBackpropInput` runs one small matrix product per image and
is slower than a forward convolution of the same size, badly so at small spatial sizes with
many channels. Measured on a 2-core AMD EPYC with AVX2 only, float32, 3x3 kernels: 20x2x3x512
(ResNet-18's layer4 at 64x96) 135 ms, against 5.7 ms as a forward convolution; 28x12x16x128
(the `tiny` backbone at 96x128) 26.1 -> 13.1 ms; 12x30x40x512 (VGG16's conv5 at 480x640)
529 -> 425 ms.

For a stride-1, undilated convolution (VALID padding, or SAME with an odd kernel), the gradient
with respect to the input is the convolution of the upstream gradient with the kernel rotated by
180 degrees and its input and output channels swapped (the same values to float rounding).
Every other convolution keeps TensorFlow's own gradient, and inference graphs (so every export)
keep the plain Conv2D op.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def input_gradient_as_convolution(upstream, kernel, padding: str = "SAME"):
    """`d loss / d input` of `conv2d(input, kernel, strides=1, padding=padding)`, NHWC.

    The upstream gradient convolved with the kernel rotated by 180 degrees, input and output
    channels swapped: with SAME padding (odd kernels) again SAME; with VALID padding over the
    upstream gradient padded by the kernel size - 1 on every side (a "full" convolution).

    Args:
        upstream: `[B, H', W', C_out]`, the gradient with respect to the convolution's output.
        kernel: `[kH, kW, C_in, C_out]` (odd `kH` and `kW` for SAME).
        padding: "SAME" or "VALID", as in the forward convolution.

    Returns:
        `[B, H, W, C_in]`.
    """
    rotated = tf.transpose(tf.reverse(kernel, axis=[0, 1]), perm=[0, 1, 3, 2])
    if padding == "VALID":
        rows, cols = int(kernel.shape[0]) - 1, int(kernel.shape[1]) - 1
        if rows or cols:
            upstream = tf.pad(upstream, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
    return tf.nn.conv2d(upstream, rotated, strides=1, padding=padding)


def _stride1_convolution(padding: str):
    @tf.custom_gradient
    def convolution(inputs, kernel):
        outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding=padding)

        def gradient(upstream):
            d_kernel = tf.raw_ops.Conv2DBackpropFilter(
                input=inputs,
                filter_sizes=tf.shape(kernel),
                out_backprop=upstream,
                strides=[1, 1, 1, 1],
                padding=padding,
            )
            return input_gradient_as_convolution(upstream, kernel, padding), d_kernel

        return outputs, gradient

    convolution.__doc__ = (
        f"`conv2d(inputs, kernel, strides=1, padding={padding!r})` (NHWC) whose input gradient "
        "is `input_gradient_as_convolution`; the kernel gradient is TensorFlow's."
    )
    return convolution


# Stride-1 convolutions by padding, each with the input gradient computed as a convolution.
STRIDE1_CONVOLUTIONS = {
    "SAME": _stride1_convolution("SAME"),
    "VALID": _stride1_convolution("VALID"),
}


@keras.saving.register_keras_serializable(package="sare_tf")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a faster input gradient in training where it is exact.

    Same arguments, weights, config and outputs as Keras' layer; a model saved with either
    loads the other's weights. When a trainable layer is called with `training=True`, a
    stride-1, undilated, ungrouped, channels-last convolution with VALID padding, or SAME
    padding and an odd kernel, takes its input gradient from `input_gradient_as_convolution`;
    everything else is Keras' computation.

    Example:
        >>> conv = Conv2D(16, 3, padding="same")
        >>> conv(keras.random.normal([2, 12, 16, 8]), training=True).shape
        TensorShape([2, 12, 16, 16])
    """

    # Switched to mixed precision with the backbone's Keras layers (sare_tf.model.compute_policy).
    computes_in_backbone_policy = True

    def call(self, inputs, training=None):
        # A frozen layer keeps Keras' op, which TensorFlow fuses with the bias and activation
        # (a frozen VGG16 block runs ~5 % faster so); frozen layers are the backbone's first
        # ones, whose input gradient nothing needs.
        self._input_gradient_as_convolution = (
            bool(training) and self.trainable and self._has_convolution_gradient()
        )
        try:
            return super().call(inputs)
        finally:
            self._input_gradient_as_convolution = False

    def convolution_op(self, inputs, kernel):
        if getattr(self, "_input_gradient_as_convolution", False):
            convolution = STRIDE1_CONVOLUTIONS[self.padding.upper()]
            return convolution(inputs, tf.cast(kernel, inputs.dtype))
        return super().convolution_op(inputs, kernel)

    def _has_convolution_gradient(self) -> bool:
        odd = all(size % 2 == 1 for size in self.kernel_size)
        return (
            (self.padding == "valid" or (self.padding == "same" and odd))
            and self.data_format == "channels_last"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
        )
