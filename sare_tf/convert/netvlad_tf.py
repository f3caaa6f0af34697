"""netvlad_tf_open's TensorFlow checkpoint (the NetVLAD authors' MatConvNet model) as sare_tf.

uzh-rpg/netvlad_tf_open converts the authors' best MatConvNet model,
`vd16_pitts30k_conv5_3_vlad_preL2_intra_white` (VGG16 + NetVLAD(64) + whitening to 4096, trained
on Pittsburgh 30k), into a TF1 name-based checkpoint (`tf.train.Saver`: `<prefix>.index`,
`<prefix>.data-00000-of-00001`, `<prefix>.meta`). The graph is `nets.vgg16NetvladPca` and
`layers.netVLAD` there; its variables, all under the scope `vgg16_netvlad_pca/`:

- `average_rgb` `[3]`: subtracted from RGB pixels in 0-255 (MatConvNet's
  `meta.normalization.averageImage`); no scaling (`ImagePreprocessing("rgb_mean")`).
- `conv{1_1,1_2,2_1,2_2,3_1,3_2,3_3,4_1,4_2,4_3,5_1,5_2,5_3}/kernel` `[3, 3, in, out]` and
  `/bias` `[out]`: `tf.layers.conv2d`, padding "same"; ReLU after each but conv5_3. For
  conv1_2, 2_2, 3_3 and 4_3 the ReLU comes after the 2x2 max-pool, which is the same function
  (ReLU is monotonic), so the Keras VGG16 layout holds.
- `assignment/kernel` `[1, 1, D, K]`: the soft-assignment 1x1 conv without bias, applied to the
  per-location L2-normalised conv5_3 features.
- `cluster_centers` `[1, 1, 1, D, K]`: the VLAD core computes `x + C`, so the centroids are
  `-C` (MatConvNet stores the negated centres).
- `WPCA/kernel` `[1, 1, D*K, P]`, `WPCA/bias` `[P]`: the whitening as a 1x1 conv on the VLAD
  vector, then L2. MatConvNet flattens the intra-normalised `[D, K]` VLAD matrix
  **dimension-major**, index `d * K + k`; sare_tf is cluster-major (`k * D + d`), so the kernel's
  rows are permuted here (`wpca_rows_to_cluster_major`). The final L2 of the VLAD vector does not
  depend on the order. A checkpoint without WPCA gives the source's VLAD vector in cluster-major
  order: the same vector up to that permutation, so the same distances and retrievals.

Normalisations are MatConvNet's `x / sqrt(sum x^2 + 1e-12)`, equal to L2 for non-zero vectors.
The checkpoint is read with `tf.train.load_checkpoint` (tensors only; the `.meta` graph is never
loaded, so nothing from the file runs).
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import tensorflow as tf

from sare_tf.convert.vgg16_netvlad import VGG16_CONVS, expect_shape, refuse_unexpected

FORMAT = "netvlad-tf"
SCOPE = "vgg16_netvlad_pca/"
TF_CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                 "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")  # fmt: skip
# Bookkeeping entries a TF checkpoint may hold beside the variables.
IGNORED_ENTRIES = {"_CHECKPOINTABLE_OBJECT_GRAPH", "global_step"}
_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")


def checkpoint_prefix(path) -> str:
    """The checkpoint prefix from a prefix, one of its files, or a folder holding one checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) != 1:
            raise ValueError(
                f"{path}: expected one TensorFlow checkpoint (*.index) in the folder, found "
                f"{len(indexes)}: {[os.path.basename(p) for p in indexes][:5]}"
            )
        path = indexes[0]
    prefix = _SUFFIX.sub("", path)
    if not os.path.isfile(f"{prefix}.index"):
        raise FileNotFoundError(f"No TensorFlow checkpoint at {path} (no {prefix}.index).")
    return prefix


def checkpoint_files(prefix: str) -> list[str]:
    """The files that hold the tensors: the index, then the data shards in order."""
    return [f"{prefix}.index", *sorted(glob.glob(f"{glob.escape(prefix)}.data-*-of-*"))]


def read_tf_checkpoint(prefix: str) -> dict:
    """Every tensor of a TF checkpoint by name (numpy), refused clearly when unreadable."""

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        return {name: reader.get_tensor(name) for name in names if name not in IGNORED_ENTRIES}
    except (
        tf.errors.OpError,
        ValueError,
        IndexError,
        RuntimeError,
    ) as error:  # IndexError: short data
        message = str(getattr(error, "message", error)).splitlines()[0][:300]
        raise ValueError(f"{prefix}: not a readable TensorFlow checkpoint ({message}).") from None


def wpca_rows_to_cluster_major(kernel: np.ndarray, dims: int, num_clusters: int) -> np.ndarray:
    """Rows indexed `d * K + k` (MatConvNet) reordered to `k * D + d` (sare_tf)."""
    outputs = kernel.shape[-1]
    return (
        kernel.reshape(dims, num_clusters, outputs).transpose(1, 0, 2).reshape(-1, outputs).copy()
    )


def check_schema(tensors: dict, path: str) -> dict:
    """The checkpoint's tensors checked by name and shape, in `build_model` layout.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped variable (named, with both shapes).
    """
    encoder, channels, expected = {}, 3, {f"{SCOPE}average_rgb"}
    mean = expect_shape(tensors, f"{SCOPE}average_rgb", (3,), path)
    for tf_name, keras_name in zip(TF_CONV_NAMES, VGG16_CONVS, strict=True):
        kernel = expect_shape(tensors, f"{SCOPE}{tf_name}/kernel", (3, 3, channels, None), path)
        bias = expect_shape(tensors, f"{SCOPE}{tf_name}/bias", (kernel.shape[-1],), path)
        encoder[keras_name] = (kernel, bias)
        channels = kernel.shape[-1]
        expected |= {f"{SCOPE}{tf_name}/kernel", f"{SCOPE}{tf_name}/bias"}
    assignment = expect_shape(tensors, f"{SCOPE}assignment/kernel", (1, 1, channels, None), path)
    num_clusters = assignment.shape[-1]
    centers = expect_shape(
        tensors, f"{SCOPE}cluster_centers", (1, 1, 1, channels, num_clusters), path
    )
    converted = {
        "encoder": encoder,
        "centroids": -centers[0, 0, 0].T.copy(),
        "assignment_kernel": assignment,
        "assignment_bias": None,
        "pca": None,
        "preprocessing": {"mode": "rgb_mean", "mean": [float(v) for v in mean]},
    }
    expected |= {f"{SCOPE}assignment/kernel", f"{SCOPE}cluster_centers"}
    if f"{SCOPE}WPCA/kernel" in tensors:
        vlad_dim = channels * num_clusters
        kernel = expect_shape(tensors, f"{SCOPE}WPCA/kernel", (1, 1, vlad_dim, None), path)
        bias = expect_shape(tensors, f"{SCOPE}WPCA/bias", (kernel.shape[-1],), path)
        converted["pca"] = (wpca_rows_to_cluster_major(kernel[0, 0], channels, num_clusters), bias)
        expected |= {f"{SCOPE}WPCA/kernel", f"{SCOPE}WPCA/bias"}
    refuse_unexpected(tensors, expected, path, "netvlad_tf_open's vgg16NetvladPca")
    return converted
