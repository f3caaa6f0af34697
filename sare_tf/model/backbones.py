"""The Keras graphs of the backbones named in `sare_tf.registry`.

Each builder takes the preprocessed image tensor and the weights (None, "imagenet" or a local
file) and returns a `keras.Model` whose layers the place-embedding model crops by name.
"""

from __future__ import annotations

import os

import keras

from sare_tf.layers.conv2d import Conv2D
from sare_tf.layers.group_normalization import GroupNormalization
from sare_tf.model.dinov2_vit import dinov2_vit
from sare_tf.model.torchvision_resnet import torchvision_resnet
from sare_tf.registry import BACKBONES, backbone_spec


def _vgg16(inputs, weights):
    """Keras' VGG16 (its ImageNet download or a local weights file), convolutions as `Conv2D`.

    Keras builds the network and loads its weights; its layers are then rebuilt in order under
    the same names and configs with sare_tf's `Conv2D`, whose training gradient is faster
    (`sare_tf.layers.conv2d`), and given the same weights.
    """
    scaffold = keras.applications.VGG16(include_top=False, weights=weights, input_tensor=inputs)
    x = inputs
    for layer in scaffold.layers:
        if not layer.name.startswith("block"):
            continue  # the caller's layers in front of the backbone
        cls = Conv2D if type(layer) is keras.layers.Conv2D else type(layer)
        rebuilt = cls.from_config(layer.get_config())
        x = rebuilt(x)
        rebuilt.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=scaffold.name)


def _keras_resnet50(inputs, weights):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=inputs)


def _ported(build_graph, what: str):
    """A builder of a ported torch backbone: random or local weights; "imagenet" is refused."""

    def build(inputs, weights):
        if weights == "imagenet":
            raise ValueError(
                f"Keras has no download of {what}'s pretrained weights. Import a checkpoint "
                "(sare-tf import) or pass a local .weights.h5 of this backbone. "
                "Received: weights='imagenet'"
            )
        model = build_graph(inputs)
        if weights is not None:
            model.load_weights(weights)
        return model

    return build


def _with_weights(model: keras.Model, weights) -> keras.Model:
    """The scaffold of a network without downloads, with a local weights file loaded if given."""
    if weights is not None:
        model.load_weights(weights)
    return model


def _tiny_plain(inputs, weights):
    """The first `tiny` network: VGG-style, no normalisation (models saved with it still load)."""
    x = inputs
    for block, filters in enumerate((32, 64, 96, 128), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}"
            )(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return _with_weights(keras.Model(inputs, x, name="tiny"), weights)


TINY_GN_GROUPS = 8


def _tiny(inputs, weights):
    """A small VGG-style network with group normalisation, for tests and the CPU demo.

    No pretrained weights exist: it is trained from scratch. Group normalisation (per image, so
    training and inference compute the same thing, unlike batch normalisation's running
    statistics) keeps every layer's output at one scale whatever a step did to its weights; the
    plain network (`tiny-plain`) lets one Adam step multiply its feature maps, and its training
    from scratch learns more slowly and collapses more often (docs/training_collapse.md). The
    last convolution has no bias and its normalisation no offset: an offset shared by every
    location of every image is the direction a collapse takes.
    """
    x = inputs
    for block, filters in enumerate((32, 64, 96, 128), start=1):
        for conv in (1, 2):
            last = block == 4 and conv == 2
            name = f"block{block}_conv{conv}"
            x = Conv2D(
                filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                name=f"{name}_linear" if last else name,
            )(x)  # fmt: skip
            x = GroupNormalization(
                TINY_GN_GROUPS, center=not last, name=name if last else f"block{block}_norm{conv}"
            )(x)
            if not last:
                x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return _with_weights(keras.Model(inputs, x, name="tiny"), weights)


_BUILDERS = {
    "vgg16": _vgg16,
    "keras-resnet50": _keras_resnet50,
    "resnet18": _ported(lambda x: torchvision_resnet(x, 18), "torchvision's ResNet-18"),
    "resnet50": _ported(lambda x: torchvision_resnet(x, 50), "torchvision's ResNet-50"),
    "resnet101": _ported(lambda x: torchvision_resnet(x, 101), "torchvision's ResNet-101"),
    "resnet50-layer3": _ported(
        lambda x: torchvision_resnet(x, 50, last_stage=3), "torchvision's ResNet-50"
    ),
    "dinov2-vits14": _ported(lambda x: dinov2_vit(x, "small"), "DINOv2 ViT-S/14"),
    "dinov2-vitb14": _ported(lambda x: dinov2_vit(x, "base"), "DINOv2 ViT-B/14"),
    "dinov2-vits14-tokens": _ported(
        lambda x: dinov2_vit(x, "small", tokens=True), "DINOv2 ViT-S/14"
    ),
    "dinov2-vitb14-tokens": _ported(
        lambda x: dinov2_vit(x, "base", tokens=True), "DINOv2 ViT-B/14"
    ),
    "tiny-plain": _tiny_plain,
    "tiny": _tiny,
}
if set(_BUILDERS) != set(BACKBONES):
    raise ImportError(
        f"Backbone builders {sorted(_BUILDERS)} differ from specs {sorted(BACKBONES)}."
    )


def resolve_weights(weights):
    """None, "imagenet", or the path of an existing local weights file."""
    if weights is None or weights == "imagenet":
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file not found. Received: weights={path!r}")
    return path


def backbone_features(name: str, preprocessed, weights=None):
    """The cropped feature-map tensor of backbone `name` on top of `preprocessed`.

    The layers are created on the caller's graph (the backbone's own `keras.Model` is only the
    scaffold the applications build), so every backbone layer is reachable by name from the
    model that uses the tensor.
    """
    spec = backbone_spec(name)
    scaffold = _BUILDERS[name](preprocessed, resolve_weights(weights))
    feature_layer = scaffold.get_layer(spec.output_layer)
    if spec.linear_output:
        # Layers read `self.activation` at call time, and get_config reports the change.
        feature_layer.activation = keras.activations.linear
    return feature_layer.output
