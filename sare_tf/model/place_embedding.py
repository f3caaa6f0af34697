"""The place-embedding model: image -> unit-norm descriptor, a model that knows what it is.

    image [B, H, W, 3] RGB 0-255 -> preprocessing -> cropped backbone -> aggregator
                                  -> [whitening] -> "descriptor" (float32, L2-normalised)

Like KerasHub's `Backbone`, `PlaceEmbedding` is a functional `keras.Model` subclass: the
constructor builds one flat graph (every backbone layer, e.g. `block5_conv3`, reachable by name
for saliency and freezing) and `get_config()` returns the constructor's arguments, so a `.keras`
file rebuilds the same class. Callers ask the model (`image_size`, `descriptor_size`,
`backbone_name`, `aggregator_name`, `fingerprint`, `describe()`) instead of inspecting its
layers. Files written before the class existed (plain functional models of the same graph) are
upgraded on load by `upgrade_functional`.
"""

from __future__ import annotations

import keras

from sare_tf.hashing import arrays_fingerprint
from sare_tf.image_size import check_image_size
from sare_tf.layers import ImagePreprocessing, NetVLAD, PCAWhitening
from sare_tf.model.backbones import backbone_features
from sare_tf.model.compute_policy import backbone_policy, set_backbone_policy
from sare_tf.registry import BACKBONES, backbone_spec, saved_backbone

DESCRIPTOR_LAYER = "descriptor"
_SERIALIZED_LAYERS = ("aggregator", "whitening", "preprocessing")


def freeze_before(model: keras.Model, trainable_from: str | None) -> None:
    """Freezes every layer before `trainable_from` in graph order; later ones stay trainable.

    `PCAWhitening` stays non-trainable (it is fitted, not learnt).
    """
    names = [layer.name for layer in model.layers]
    if trainable_from is not None and trainable_from not in names:
        raise ValueError(
            f"`trainable_from` is not a layer of {model.name}. "
            f"Received: trainable_from={trainable_from!r}; layers: {names}"
        )
    frozen = trainable_from is not None
    for layer in model.layers:
        if layer.name == trainable_from:
            frozen = False
        layer.trainable = not frozen and not isinstance(layer, PCAWhitening)


@keras.saving.register_keras_serializable(package="sare_tf")
class PlaceEmbedding(keras.Model):
    """Backbone + aggregator [+ whitening] + preprocessing, as one image -> descriptor model.

    Args:
        backbone: a name of `sare_tf.model.BACKBONES` ("vgg16", "resnet50", "tiny").
        aggregator: the pooling layer on the feature map (default `NetVLAD(64)`), named
            "netvlad" for NetVLAD.
        whitening: an optional layer after the aggregator (`PCAWhitening`).
        preprocessing: the `ImagePreprocessing` layer (default: the backbone's pixel mode); it
            also records the image size the model was trained at.
        trainable_from: first trainable backbone layer; earlier ones are frozen. "default" uses
            the backbone's default ("block5_conv1" for VGG16), None trains everything.
        backbone_dtype: the policy the backbone computes in (None: the global policy).
        weights: backbone weights at construction: None (random), "imagenet" (Keras downloads
            them) or a local weights file. Not part of the config: a saved model holds its weights.
        input_shape: `(H, W, 3)`, None for any size.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Example:
        >>> model = PlaceEmbedding("tiny", NetVLAD(4, name="netvlad"), input_shape=(64, 64, 3))
        >>> model.descriptor_size, model.backbone_name
        (512, 'tiny')
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        aggregator: keras.layers.Layer | None = None,
        whitening: keras.layers.Layer | None = None,
        preprocessing: ImagePreprocessing | None = None,
        trainable_from: str | None = "default",
        backbone_dtype: str | None = None,
        weights: str | None = None,
        input_shape: tuple = (None, None, 3),
        **kwargs,
    ):
        spec = backbone_spec(backbone)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(
                f"`input_shape` must be (H, W, 3). Received: input_shape={input_shape}"
            )
        aggregator = NetVLAD(64, name="netvlad") if aggregator is None else aggregator
        if preprocessing is None:
            preprocessing = ImagePreprocessing(spec.preprocessing, name="preprocess")
        inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
        pooled = aggregator(backbone_features(backbone, preprocessing(inputs), weights))
        if whitening is not None:
            pooled = whitening(pooled)
        descriptor = keras.layers.Activation("linear", dtype="float32", name=DESCRIPTOR_LAYER)(
            pooled
        )
        kwargs.setdefault("name", f"{backbone}_{aggregator.name}")
        super().__init__(inputs, descriptor, **kwargs)
        self.backbone_name = backbone
        self.aggregator = aggregator
        self.whitening = whitening
        self.preprocessing = preprocessing
        self.input_image_shape = input_shape
        self.trainable_from = (
            spec.default_trainable_from if trainable_from == "default" else trainable_from
        )
        freeze_before(self, self.trainable_from)
        if backbone_dtype is not None:
            set_backbone_policy(self, backbone_dtype)

    # --- what the model is -------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int] | None:
        """`(height, width)` the model was trained at: its fixed input, else the size recorded."""
        fixed = self.input_image_shape[:2]
        if all(isinstance(v, int) for v in fixed):
            return int(fixed[0]), int(fixed[1])
        return self.preprocessing.image_size

    @image_size.setter
    def image_size(self, image_size) -> None:
        self.preprocessing.image_size = check_image_size(image_size)

    @property
    def descriptor_size(self) -> int:
        return int(self.outputs[0].shape[-1])

    @property
    def aggregator_name(self) -> str:
        kind = type(self.aggregator)
        return getattr(kind, "aggregator_name", kind.__name__.lower())

    @property
    def whitening_dim(self) -> int | None:
        return None if self.whitening is None else int(self.whitening.output_dim)

    @property
    def compute_policy(self) -> str:
        """The policy the backbone computes in ("float32", "mixed_bfloat16", ...)."""
        return backbone_policy(self)

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights (shapes and values, in order): what identifies its descriptors."""
        return arrays_fingerprint(weight.numpy() for weight in self.weights)

    def describe(self) -> dict:
        """Backbone, aggregator, sizes and precision, as `summary.json` and tables record them."""
        size = self.image_size
        spec = BACKBONES[self.backbone_name]
        return {
            "backbone": self.backbone_name,
            "feature_layer": spec.output_layer,
            "aggregator": self.aggregator_name,
            "num_clusters": getattr(self.aggregator, "num_clusters", None),
            "pca_dim": self.whitening_dim,
            "descriptor_dim": self.descriptor_size,
            "image_size": None if size is None else list(size),
            "precision": self.compute_policy,
        }

    def feature_model(self) -> keras.Model:
        """image -> the cropped backbone's local feature map `[B, h, w, D]` (the aggregator input)."""
        return keras.Model(self.input, self.aggregator.input, name=f"{self.name}_features")

    def freeze_before(self, trainable_from: str | None) -> None:
        """Makes `trainable_from` the first trainable layer (None: all); recorded in the config."""
        freeze_before(self, trainable_from)
        self.trainable_from = trainable_from

    # --- serialisation -----------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "backbone_revision": BACKBONES[self.backbone_name].revision,
            "aggregator": keras.saving.serialize_keras_object(self.aggregator),
            "whitening": None
            if self.whitening is None
            else keras.saving.serialize_keras_object(self.whitening),
            "preprocessing": keras.saving.serialize_keras_object(self.preprocessing),
            "trainable_from": self.trainable_from,
            "backbone_dtype": self.compute_policy,
            "input_shape": list(self.input_image_shape),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # A model saved before its backbone's graph changed is rebuilt with the graph it had.
        config["backbone"] = saved_backbone(config["backbone"], config.pop("backbone_revision", 1))
        for key in _SERIALIZED_LAYERS:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def copy_layer_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies the weights of every layer of `target` that `source` has under the same name."""
    names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def fresh_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, unbuilt layer of the same class and config (its weights are set afterwards)."""
    return type(layer).from_config(layer.get_config())


def recognised_backbone(model: keras.Model) -> str | None:
    """The `BACKBONES` name whose cropped output feeds the model's NetVLAD layer, or None."""
    try:
        feature_map = model.get_layer("netvlad").input
    except ValueError:
        return None
    channels = int(feature_map.shape[-1])
    for layer in model.layers:
        try:
            feeds = layer.output is feature_map
        except (AttributeError, ValueError):
            continue
        if feeds:
            return next(
                (
                    name
                    for name, spec in BACKBONES.items()
                    if spec.output_layer == layer.name and spec.channels == channels
                ),
                None,
            )
    return None


def upgrade_functional(model: keras.Model) -> keras.Model:
    """A `PlaceEmbedding` holding the weights of a plain functional sare_tf model, if it is one.

    `.keras` files written before `PlaceEmbedding` existed hold the same graph as a plain
    functional model; this rebuilds it as the class (same layer names, configs and weights).
    A model of another shape (a custom backbone) is returned as it is.
    """
    if isinstance(model, PlaceEmbedding):
        return model
    backbone = recognised_backbone(model)
    names = {layer.name for layer in model.layers}
    if backbone is None or "preprocess" not in names:
        return model
    upgraded = PlaceEmbedding(
        backbone,
        aggregator=fresh_layer(model.get_layer("netvlad")),
        whitening=fresh_layer(model.get_layer("pca_whitening"))
        if "pca_whitening" in names
        else None,
        preprocessing=fresh_layer(model.get_layer("preprocess")),
        trainable_from=None,
        backbone_dtype=backbone_policy(model),
        input_shape=tuple(model.inputs[0].shape[1:]),
        name=model.name,
    )
    copy_layer_weights(model, upgraded)
    for layer in upgraded.layers:
        layer.trainable = model.get_layer(layer.name).trainable
    first_trainable = next(
        (layer.name for layer in upgraded.layers if layer.trainable and layer.weights), None
    )
    upgraded.trainable_from = first_trainable
    return upgraded
