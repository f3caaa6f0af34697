"""The NetVLAD authors' MatConvNet models as plain MATLAB structs (hloc's `Pitts30K_struct.mat`,
`TokyoTM_struct.mat`) as sare_tf models.

The NetVLAD layers of the authors' `.mat` networks are MATLAB classdef objects, which no reader
outside MATLAB decodes; netvlad_tf_open's `net_class2struct.m` turns the network into plain
structs, and hloc publishes the best Pittsburgh 30k and Tokyo Time Machine models in that form.
scipy reads them (`loadmat(struct_as_record=False, squeeze_me=True)`: data only, nothing runs).
The layout, as hloc reads it (facts):

- `net.layers`, one struct per MatConvNet layer, aligned with `vgg16.features[:-2]` for the first
  29 (conv / relu / pool): the 13 convolutions at positions 0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
  24, 26, 28, each with `weights = {kernel [3, 3, in, out], bias [out]}` (Keras's layout; ReLU after
  each but conv5_3);
- position 30, NetVLAD: `weights = {assignment [D, K], -centres [D, K]}` (no assignment bias; the
  centres are stored negated), applied to the per-location L2-normalised conv5_3 features, with
  intra-normalisation and a dimension-major flattening (index `d * K + k`);
- position 33, whitening: `weights = {kernel [1, 1, D*K, P], bias [P]}`, then L2 (rows permuted
  here to sare_tf's cluster-major order, as for netvlad_tf_open's checkpoint);
- `net.meta.normalization.averageImage`: the RGB mean subtracted from 0-255 pixels (three values,
  or an image whose first pixel hloc takes).
"""

from __future__ import annotations

import numpy as np
import scipy.io

from sare_tf.convert.netvlad_tf import wpca_rows_to_cluster_major
from sare_tf.convert.vgg16_netvlad import VGG16_CONVS

FORMAT = "hloc-netvlad"
CONV_POSITIONS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
NETVLAD_POSITION, WHITENING_POSITION = 30, 33


def read_struct_mat(path: str, refusal: str):
    """`net` of a struct `.mat` file; `refusal` (the route to take) for anything else."""
    try:
        contents = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (
        ValueError,
        TypeError,
        OSError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    ) as error:
        raise ValueError(f"{path}: not a readable MATLAB file ({error}). {refusal}") from None
    net = contents.get("net")
    layers = getattr(net, "layers", None)
    if layers is None or not all(hasattr(layer, "weights") for layer in np.atleast_1d(layers)):
        raise ValueError(refusal)
    return net


def _fit_shape(array: np.ndarray, shape: tuple) -> np.ndarray | None:
    """`array` as `shape` (one None: any size), or None when it does not fit. scipy squeezes
    unit axes on reading, so they are put back."""
    known = int(np.prod([s for s in shape if s is not None]))
    full = tuple(array.size // max(known, 1) if s is None else s for s in shape)
    if int(np.prod(full)) != array.size or np.squeeze(array).shape != tuple(
        d for d in full if d != 1
    ):
        return None
    return array.reshape(full)


def _weights(layers, position: int, shapes: tuple, path: str) -> list[np.ndarray]:
    """The weights of `net.layers[position]`, as `shapes`; what does not fit is named."""
    if position >= len(layers):
        raise ValueError(
            f"{path}: net.layers has {len(layers)} layers; layer {position} is missing."
        )
    arrays = [np.asarray(w, np.float32) for w in np.atleast_1d(layers[position].weights)]
    if len(arrays) != len(shapes):
        raise ValueError(
            f"{path}: net.layers[{position}] has {len(arrays)} weight arrays, expected {len(shapes)}."
        )
    checked = [_fit_shape(array, shape) for array, shape in zip(arrays, shapes, strict=True)]
    for index, (array, fitted) in enumerate(zip(arrays, checked, strict=True)):
        if fitted is None:
            raise ValueError(
                f"{path}: net.layers[{position}].weights[{index}] has shape {array.shape}, "
                f"expected {shapes[index]} (None: any size)."
            )
    return checked


def _average_rgb(net, path: str) -> list[float]:
    try:
        mean = np.asarray(net.meta.normalization.averageImage, np.float64)
    except AttributeError:
        raise ValueError(
            f"{path}: no net.meta.normalization.averageImage (the pixel mean)."
        ) from None
    if mean.ndim == 3:
        mean = mean[0, 0]  # an average image: its first pixel, as hloc takes it
    if mean.shape != (3,):
        raise ValueError(
            f"{path}: averageImage has shape {mean.shape}; expected 3 values or H x W x 3."
        )
    return [float(v) for v in mean]


def check_schema(net, path: str) -> dict:
    """The network's weights, checked by position and shape, in `vgg16_netvlad.build_model`
    layout."""
    layers = np.atleast_1d(net.layers)
    encoder, channels = {}, 3
    for position, name in zip(CONV_POSITIONS, VGG16_CONVS, strict=True):
        kernel, bias = _weights(layers, position, ((3, 3, channels, None), (None,)), path)
        if bias.shape[0] != kernel.shape[-1]:
            raise ValueError(
                f"{path}: net.layers[{position}] has {kernel.shape[-1]} filters but {bias.shape[0]} biases."
            )
        encoder[name], channels = (kernel, bias), kernel.shape[-1]
    assignment, negated = _weights(
        layers, NETVLAD_POSITION, ((channels, None), (channels, None)), path
    )
    num_clusters = assignment.shape[1]
    converted = {
        "encoder": encoder,
        "centroids": -negated.T.copy(),
        "assignment_kernel": assignment[None, None],
        "assignment_bias": None,
        "pca": None,
        "preprocessing": {"mode": "rgb_mean", "mean": _average_rgb(net, path)},
    }
    if len(layers) > WHITENING_POSITION and np.size(layers[WHITENING_POSITION].weights):
        vlad_dim = channels * num_clusters
        kernel, bias = _weights(layers, WHITENING_POSITION, ((1, 1, vlad_dim, None), (None,)), path)
        converted["pca"] = (wpca_rows_to_cluster_major(kernel[0, 0], channels, num_clusters), bias)
    return converted
