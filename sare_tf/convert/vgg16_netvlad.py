"""The model every importer builds: VGG16 cropped at conv5_3, NetVLAD, optional PCA, L2.

An importer (one per source format) reads its file, checks its schema and hands `build_model` the
weights already in Keras / sare_tf layout, as a dict:

- `encoder`: `{Keras layer name: (kernel [3, 3, in, out], bias [out])}` for the 13 convolutions
  `block1_conv1` ... `block5_conv3` (`VGG16_CONVS`); ReLU after each but conv5_3, 2x2 max-pools
  after blocks 1-4.
- `centroids` `[K, D]`, `assignment_kernel` `[1, 1, D, K]`, `assignment_bias` `[K]` or None
  (NetVLAD "v2"), all for sare_tf's NetVLAD (soft assignment of the per-location L2-normalised
  features, residuals to the centroids, intra-normalisation, cluster-major flattening
  `k * D + d`, L2).
- `pca`: None, or `(projection [K * D, P], bias [P])` acting on the cluster-major NetVLAD vector,
  followed by L2 (`PCAWhitening(use_bias=True)` with a zero mean).
- `preprocessing`: `ImagePreprocessing` arguments, e.g. `{"mode": "torch"}` or
  `{"mode": "rgb_mean", "mean": [r, g, b]}`.
"""

from __future__ import annotations

import keras
import numpy as np

from sare_tf.layers import Conv2D, ImagePreprocessing, NetVLAD, PCAWhitening

VGG16_CONVS = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)  # fmt: skip
POOL_AFTER = {"block1_conv2": "block1_pool", "block2_conv2": "block2_pool",
              "block3_conv3": "block3_pool", "block4_conv3": "block4_pool"}  # fmt: skip


def expect_shape(tensors: dict, key: str, shape: tuple, path: str) -> np.ndarray:
    """`tensors[key]` as float32, refused with the key and both shapes unless it is `shape`.

    `None` in `shape` accepts any size on that axis.
    """
    if key not in tensors:
        raise ValueError(f"{path}: the checkpoint has no {key!r} (a {shape} tensor expected).")
    value = tensors[key]
    if len(value.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        raise ValueError(
            f"{path}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} "
            "(None: any size)."
        )
    return np.asarray(value, np.float32)


def refuse_unexpected(keys, expected: set, path: str, what: str) -> None:
    unexpected = sorted(set(keys) - expected)
    if unexpected:
        raise ValueError(
            f"{path}: unexpected keys for {what}: "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )


def build_model(converted: dict, image_size=(480, 640), name: str = "imported_netvlad"):
    """The sare_tf embedding model holding the converted weights (float32)."""

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = ImagePreprocessing(**converted["preprocessing"], image_size=image_size, name="preprocess")(
        inputs
    )
    created = {}
    for layer_name in VGG16_CONVS:
        kernel, _ = converted["encoder"][layer_name]
        # conv5_3 is linear: NetVLAD crops VGG16 before its last ReLU.
        activation = None if layer_name == VGG16_CONVS[-1] else "relu"
        layer = Conv2D(kernel.shape[-1], 3, padding="same", activation=activation, name=layer_name)
        x = layer(x)
        created[layer_name] = layer
        if layer_name in POOL_AFTER:
            x = keras.layers.MaxPooling2D(2, name=POOL_AFTER[layer_name])(x)
    netvlad = NetVLAD(
        converted["centroids"].shape[0],
        assignment_bias=converted["assignment_bias"] is not None,
        name="netvlad",
    )
    descriptor = netvlad(x)
    if converted["pca"] is not None:
        projection, pca_bias = converted["pca"]
        pca = PCAWhitening(projection.shape[1], use_bias=True, name="pca_whitening")
        descriptor = pca(descriptor)
    descriptor = keras.layers.Activation("linear", dtype="float32", name="descriptor")(descriptor)
    model = keras.Model(inputs, descriptor, name=name)
    for layer_name, layer in created.items():
        layer.set_weights(list(converted["encoder"][layer_name]))
    netvlad.assignment_kernel.assign(converted["assignment_kernel"])
    netvlad.centroids.assign(converted["centroids"])
    if netvlad.bias is not None:
        netvlad.bias.assign(converted["assignment_bias"])
    # alpha only marks the layer as initialised (the kernel is the checkpoint's, not alpha * c).
    netvlad.alpha.assign(float(np.linalg.norm(converted["assignment_kernel"], axis=2).mean()))
    if converted["pca"] is not None:
        pca.mean.assign(np.zeros(pca.mean.shape, np.float32))
        pca.projection.assign(projection)
        pca.bias.assign(pca_bias)
    return model
