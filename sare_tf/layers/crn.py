"""Contextual Reweighting Network (CRN) on NetVLAD (Kim, Dunn and Frahm, CVPR 2017), the
NetVLAD + CRN row of the SARE paper's comparison.

    conv5_3 [B, H, W, D] -> 3x3/2 average pooling (Caffe's ceil mode: the last window may hang
    over the edge and averages what it covers)
      -> three context filters 5x5 (32), 3x3 (32), 7x7 (20), each ReLU, concatenated (84)
      -> 1x1 convolution to one channel (its kernel fixed at 1, its bias learnt), ReLU
      -> x2 bilinear upsampling (a fixed 4x4 transposed convolution, stride 2, padding 1)
      = the reweighting mask m [B, H, W]
    NetVLAD with each location's soft assignment scaled by m: V_k = sum_i m_i a_k(x_i)(x_i - c_k)

The layout is the authors' deploy network (`deploy_rw_netvlad_vgg.prototxt`, facts): their
element-wise product needs the upsampled mask to match the feature map, which holds for even
feature-map sizes (e.g. 30 x 40 from 480 x 640); other sizes are cropped or edge-padded to fit.

Reference: Kim, Dunn, Frahm, "Learned Contextual Feature Reweighting for Image
Geo-Localization", CVPR 2017, sec. 3.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from sare_tf.layers.netvlad import NetVLAD, netvlad_aggregate

CONTEXT_FILTERS = ((5, 32), (3, 32), (7, 20))  # (size, channels), in the authors' order
BILINEAR_1D = np.array([0.25, 0.75, 0.75, 0.25], np.float32)  # Caffe's bilinear filler, f = 2


def caffe_average_pool(x):
    """3x3 stride-2 average pooling with Caffe's ceil-mode output size: `[B, H, W, C]` ->
    `[B, ceil((H - 3) / 2) + 1, ...]`; a window past the edge averages the cells it covers."""
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    pad_h = 2 * (((height - 3) + 1) // 2) + 3 - height  # rows the last window hangs over
    pad_w = 2 * (((width - 3) + 1) // 2) + 3 - width
    padded = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    ones = ops.pad(ops.ones_like(x[..., :1]), [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    sums = ops.average_pool(padded, 3, strides=2, padding="valid") * 9.0
    counts = ops.average_pool(ones, 3, strides=2, padding="valid") * 9.0
    return sums / counts


def bilinear_upsample(mask):
    """Caffe's fixed bilinear x2 upsampling: a 4x4 transposed convolution, stride 2, padding 1
    (`[B, h, w, 1]` -> `[B, 2h, 2w, 1]`; outside the map counts as zero)."""
    kernel = np.outer(BILINEAR_1D, BILINEAR_1D)[:, :, None, None]
    height, width = ops.shape(mask)[1], ops.shape(mask)[2]
    full = ops.conv_transpose(mask, ops.convert_to_tensor(kernel), strides=2, padding="valid")
    return full[:, 1 : 2 * height + 1, 1 : 2 * width + 1]  # padding 1 crops one cell each side


def fit_to(mask, height, width):
    """`mask` `[B, h, w]` cropped or padded (mirrored edge) to `[B, height, width]`."""
    mask = mask[:, :height, :width]
    pad_h = ops.maximum(height - ops.shape(mask)[1], 0)
    pad_w = ops.maximum(width - ops.shape(mask)[2], 0)
    return ops.pad(mask, [[0, 0], [0, pad_h], [0, pad_w]], mode="symmetric")


@keras.saving.register_keras_serializable(package="sare_tf")
class CRNNetVLAD(NetVLAD):
    """NetVLAD whose locations are reweighted by a Contextual Reweighting Network (module
    docstring). Cluster initialisation, `set_centroids` and the NetVLAD weights are NetVLAD's.

    Args:
        num_clusters: K.
        **kwargs: `NetVLAD` arguments.
    """

    aggregator_name = "crn-netvlad"

    def build(self, input_shape):
        super().build(input_shape)
        depth, glorot = int(input_shape[-1]), keras.initializers.GlorotUniform()
        self.context_kernels, self.context_biases = [], []
        for size, channels in CONTEXT_FILTERS:
            self.context_kernels.append(
                self.add_weight(
                    name=f"context_{size}x{size}_kernel",
                    shape=(size, size, depth, channels),
                    initializer=glorot,
                )
            )
            self.context_biases.append(self.add_weight(
                name=f"context_{size}x{size}_bias", shape=(channels,), initializer="zeros"
            ))  # fmt: skip
        total = sum(channels for _, channels in CONTEXT_FILTERS)
        # The authors fix the accumulation kernel at 1 (lr_mult 0) and learn its bias.
        self.accumulation_kernel = self.add_weight(
            name="accumulation_kernel", shape=(1, 1, total, 1), initializer="ones", trainable=False
        )
        self.accumulation_bias = self.add_weight(
            name="accumulation_bias", shape=(1,), initializer="zeros"
        )

    def reweighting_mask(self, inputs):
        """`[B, H, W]` the weight of each location (>= 0)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        features = ops.cast(inputs, self.compute_dtype)
        pooled = caffe_average_pool(features)
        context = [
            ops.relu(ops.conv(pooled, kernel, padding="same") + bias)
            for kernel, bias in zip(self.context_kernels, self.context_biases, strict=True)
        ]
        mask = ops.conv(ops.concatenate(context, axis=-1), self.accumulation_kernel)
        mask = ops.relu(mask + self.accumulation_bias)
        upsampled = bilinear_upsample(mask)[..., 0]
        return fit_to(upsampled, ops.shape(features)[1], ops.shape(features)[2])

    def call(self, inputs):
        features = ops.cast(inputs, self.compute_dtype)
        return netvlad_aggregate(
            features, self.assignment_kernel, self.centroids, self.bias,
            location_weights=self.reweighting_mask(features),
        )  # fmt: skip
