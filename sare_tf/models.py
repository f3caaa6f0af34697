"""Backbones cropped for place recognition, the embedding model and the tuple model.

The embedding model is one flat functional graph (so every backbone layer, e.g.
`block5_conv3`, is reachable by name for saliency and for freezing):

    image [B, H, W, 3] RGB 0-255 float -> preprocess -> cropped backbone -> netvlad -> [pca_whitening] -> descriptor

The tuple model folds `[B, 2+N, H, W, 3]` into one image batch, runs the embedding model once
on `B*(2+N)` images and unfolds the result to `[B, 2+N, D]` (query, positive, negatives).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import keras

from sare_tf.layers import FoldTuples, ImagePreprocessing, NetVLAD, PCAWhitening, UnfoldTuples


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Where and how a backbone is cropped.

    Attributes:
        name: registry key.
        build: `build(inputs, weights) -> keras.Model` on top of the preprocessed tensor.
        output_layer: layer whose output is the local feature map.
        linear_output: remove the activation of `output_layer` (NetVLAD crops VGG16 at conv5_3
            before its ReLU: negative responses carry information).
        preprocessing: `ImagePreprocessing` mode.
        default_trainable_from: first trainable layer by default (None: all trainable).
        channels: D of the feature map.
        stride: spatial reduction of the feature map.
        description: where it is cropped, for users.
    """

    name: str
    build: Callable
    output_layer: str
    linear_output: bool
    preprocessing: str
    default_trainable_from: str | None
    channels: int
    stride: int
    description: str


def _vgg16(inputs, weights):
    return keras.applications.VGG16(include_top=False, weights=weights, input_tensor=inputs)


def _resnet50(inputs, weights):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=inputs)


def _tiny(inputs, weights):
    """A small VGG-style network for tests and the CPU demo (no pretrained weights exist)."""
    x = inputs
    for block, filters in enumerate((32, 64, 96, 128), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}"
            )(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    model = keras.Model(inputs, x, name="tiny")
    if weights is not None:
        model.load_weights(weights)
    return model


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        "vgg16",
        _vgg16,
        "block5_conv3",
        True,
        "caffe",
        "block5_conv1",
        512,
        16,
        "VGG16 cropped at conv5_3 before its ReLU (the NetVLAD / SARE setting); 512-d, stride 16.",
    ),
    "resnet50": BackboneSpec(
        "resnet50",
        _resnet50,
        "conv4_block6_out",
        False,
        "caffe",
        "conv4_block1_1_conv",
        1024,
        16,
        "ResNet50 cropped after its conv4 stage (conv4_block6_out); 1024-d, stride 16, ~1/4 of VGG16's FLOPs.",
    ),
    "tiny": BackboneSpec(
        "tiny",
        _tiny,
        "block4_conv2",
        True,
        "tf",
        None,
        128,
        8,
        "A 8-conv VGG-style network trained from scratch, for tests and the CPU demo; 128-d, stride 8.",
    ),
}


def _resolve_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file not found. Received: weights={path!r}")
    return path


def build_embedding_model(
    backbone: str = "vgg16",
    num_clusters: int = 64,
    pca_dim: int | None = None,
    weights: str | None = None,
    trainable_from: str | None = "default",
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
) -> keras.Model:
    """Builds image -> descriptor: cropped backbone, NetVLAD, optional PCA whitening, L2.

    Args:
        backbone: a key of `BACKBONES` ("vgg16", "resnet50", "tiny").
        num_clusters: K of NetVLAD; the descriptor has `K * D` dims (D = backbone channels).
        pca_dim: add a `PCAWhitening` layer to this size (fit it with `fit_pca_whitening_layer`).
        weights: None (random), "imagenet" (Keras downloads them) or a local weights file.
        trainable_from: first trainable backbone layer; earlier ones are frozen. "default" uses
            the backbone's default ("block5_conv1" for VGG16), None makes everything trainable.
        input_shape: `(H, W, 3)`, None for any size.
        name: model name.

    Returns:
        A functional `keras.Model` with input "image" (float32 RGB 0-255) and a float32
        unit-norm descriptor output.

    Example:
        >>> model = build_embedding_model("tiny", num_clusters=4, input_shape=(64, 64, 3))
        >>> model.output_shape
        (None, 512)
    """
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown backbone. Expected one of {sorted(BACKBONES)}. Received: backbone={backbone!r}"
        )
    spec = BACKBONES[backbone]
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (H, W, 3). Received: input_shape={input_shape}")
    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    preprocessed = ImagePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    cropped = spec.build(preprocessed, _resolve_weights(weights))
    feature_layer = cropped.get_layer(spec.output_layer)
    if spec.linear_output:
        # Layers read `self.activation` at call time, and get_config reports the change, so
        # the saved model rebuilds with the linear output too.
        feature_layer.activation = keras.activations.linear
    features = feature_layer.output
    descriptor = NetVLAD(num_clusters, name="netvlad")(features)
    if pca_dim is not None:
        descriptor = PCAWhitening(pca_dim, name="pca_whitening")(descriptor)
    descriptor = keras.layers.Activation("linear", dtype="float32", name="descriptor")(descriptor)
    model = keras.Model(inputs, descriptor, name=name or f"{backbone}_netvlad{num_clusters}")
    freeze_before(
        model, spec.default_trainable_from if trainable_from == "default" else trainable_from
    )
    return model


def freeze_before(model: keras.Model, trainable_from: str | None) -> None:
    """Freezes every layer before `trainable_from` in graph order; later ones stay trainable.

    `PCAWhitening` stays non-trainable (it is fitted, not learnt).
    """
    names = [layer.name for layer in model.layers]
    if trainable_from is not None and trainable_from not in names:
        raise ValueError(
            f"`trainable_from` is not a layer of {model.name}. Received: trainable_from={trainable_from!r}; "
            f"layers: {names}"
        )
    frozen = trainable_from is not None
    for layer in model.layers:
        if layer.name == trainable_from:
            frozen = False
        layer.trainable = not frozen and not isinstance(layer, PCAWhitening)


def netvlad_layer(model: keras.Model) -> NetVLAD:
    """The NetVLAD layer of an embedding model (or of a tuple model wrapping one)."""
    return embedding_of(model).get_layer("netvlad")


def embedding_of(model: keras.Model) -> keras.Model:
    """The embedding model inside a tuple model, or the model itself."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(isinstance(sub, NetVLAD) for sub in layer.layers):
            return layer
    if any(isinstance(layer, NetVLAD) for layer in model.layers):
        return model
    raise ValueError(f"No NetVLAD layer found in model {model.name!r}.")


def feature_model(model: keras.Model) -> keras.Model:
    """image -> the cropped backbone's local feature map `[B, h, w, D]` (the NetVLAD input)."""
    embedding = embedding_of(model)
    return keras.Model(
        embedding.input, embedding.get_layer("netvlad").input, name=f"{embedding.name}_features"
    )


def build_tuple_model(
    embedding_model: keras.Model, num_negatives: int = 10, name: str = "tuple_model"
) -> keras.Model:
    """Wraps an embedding model to embed (query, positive, N negatives) tuples.

    Args:
        embedding_model: image -> descriptor model.
        num_negatives: N; tuples hold `2 + N` images.
        name: model name.

    Returns:
        A model from `[B, 2+N, H, W, 3]` to `[B, 2+N, D]` float32 that runs the embedding
        model once on the `B * (2+N)` images.
    """
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(
            f"`num_negatives` must be a positive integer. Received: num_negatives={num_negatives!r}"
        )
    tuple_size = 2 + num_negatives
    height, width, channels = embedding_model.input_shape[1:]
    inputs = keras.Input(
        shape=(tuple_size, height, width, channels), dtype="float32", name="tuple_images"
    )
    images = FoldTuples(name="fold_tuples")(inputs)
    descriptors = embedding_model(images)
    outputs = UnfoldTuples(tuple_size, name="unfold_tuples", dtype="float32")(descriptors)
    return keras.Model(inputs, outputs, name=name)


def fit_pca_whitening_layer(
    model: keras.Model, descriptors, max_samples: int = 10_000, seed: int = 0
) -> None:
    """Fits the model's `pca_whitening` layer on NetVLAD descriptors `[M, K*D]`."""
    embedding_of(model).get_layer("pca_whitening").adapt(
        descriptors, max_samples=max_samples, seed=seed
    )


def with_pca_whitening(
    model: keras.Model, descriptors, pca_dim: int, max_samples: int = 10_000, seed: int = 0
) -> keras.Model:
    """A new embedding model with a fitted `PCAWhitening` after NetVLAD.

    The result shares every layer (and weight) of `model` up to "netvlad", then applies a
    `PCAWhitening(pca_dim)` fitted on `descriptors` and a float32 "descriptor" output, as
    `build_embedding_model(..., pca_dim=pca_dim)` followed by `fit_pca_whitening_layer` would.

    Args:
        model: an embedding model without PCA whitening (or a tuple model wrapping one).
        descriptors: `[M, K*D]` NetVLAD descriptors (the "netvlad" layer's output) to fit on.
        pca_dim: size of the whitened descriptor.
        max_samples: at most this many descriptors are used for the fit.
        seed: subset seed.

    Returns:
        A functional model image -> `[B, pca_dim]` unit-norm descriptor.
    """
    embedding = embedding_of(model)
    if any(isinstance(layer, PCAWhitening) for layer in embedding.layers):
        raise ValueError(
            f"Model {embedding.name!r} already has a PCA whitening layer. Received: pca_dim={pca_dim}"
        )
    pca = PCAWhitening(pca_dim, name="pca_whitening")
    pca.adapt(descriptors, max_samples=max_samples, seed=seed)
    whitened = pca(embedding.get_layer("netvlad").output)
    descriptor = keras.layers.Activation("linear", dtype="float32", name="descriptor")(whitened)
    return keras.Model(embedding.input, descriptor, name=f"{embedding.name}_pca{pca_dim}")
