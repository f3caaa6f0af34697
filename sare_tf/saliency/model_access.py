"""Getting a model into a form tf-keras-vis can explain.

Three things can stand in the way: a model built under a mixed precision policy (Grad-CAM++
multiplies bfloat16 gradients with float32 scores and fails), a tuple model wrapping the
embedding model, and a SavedModel, which serves image -> descriptor through a signature
without exposing any intermediate layer.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from sare_tf.artifacts import locate_model, read_keras_model
from sare_tf.layers import NetVLAD
from sare_tf.models import embedding_of

_LOW_PRECISION = ("float16", "bfloat16")


@keras.saving.register_keras_serializable(package="sare_tf")
class SavedModelSignature(keras.layers.Layer):
    """Calls one signature of a loaded SavedModel as a Keras layer (image -> descriptor).

    Gradients flow through the restored function to its input image, so vanilla gradients and
    SmoothGrad work; no intermediate layer is visible, so CAM methods do not.

    Args:
        loaded: the object returned by `tf.saved_model.load`.
        signature: signature name, "serving_default" by default.
        **kwargs: base layer arguments.
    """

    def __init__(self, loaded, signature: str = "serving_default", **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        signatures = getattr(loaded, "signatures", None)
        if signatures is None or signature not in signatures:
            available = sorted(signatures) if signatures is not None else []
            raise ValueError(
                f"The SavedModel has no signature {signature!r}; available: {available}. "
                f"Received: signature={signature!r}"
            )
        # Keeping the loaded object alive keeps the variables the function reads alive.
        self._loaded = loaded
        self._function = signatures[signature]
        self.signature = signature
        input_specs = self._function.structured_input_signature[1]
        if len(input_specs) != 1:
            raise ValueError(
                f"Signature {signature!r} must take one image tensor. "
                f"Received inputs: {sorted(input_specs)}"
            )
        ((self._input_key, input_spec),) = input_specs.items()
        if input_spec.dtype != tf.float32 or input_spec.shape.rank != 4:
            raise ValueError(
                f"Signature {signature!r} must take float32 images [B, H, W, 3] (it may take "
                f"JPEG bytes instead; use 'serving_default'). Received: {input_spec}"
            )
        outputs = self._function.structured_outputs
        self._output_key = "descriptor" if "descriptor" in outputs else sorted(outputs)[0]
        self.descriptor_size = outputs[self._output_key].shape[-1]

    def call(self, images):
        return self._function(**{self._input_key: tf.cast(images, tf.float32)})[self._output_key]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.descriptor_size)


def is_savedmodel_backed(model: keras.Model) -> bool:
    """True when the model wraps a SavedModel signature (no intermediate layers)."""
    return any(isinstance(layer, SavedModelSignature) for layer in model.layers)


def model_from_savedmodel(loaded_or_path, signature: str = "serving_default") -> keras.Model:
    """Wraps a SavedModel's image -> descriptor signature as a Keras functional model.

    Args:
        loaded_or_path: a SavedModel directory or the result of `tf.saved_model.load`.
        signature: the signature to call.

    Returns:
        A `keras.Model` with input "image" `[B, H, W, 3]` float32 and the descriptor output.
    """
    loaded = loaded_or_path
    if isinstance(loaded_or_path, str | os.PathLike):
        path = os.fspath(loaded_or_path)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"No SavedModel (saved_model.pb) in {path!r}.")
        loaded = tf.saved_model.load(path)
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    outputs = SavedModelSignature(loaded, signature, name="savedmodel_signature")(inputs)
    return keras.Model(inputs, outputs, name="savedmodel")


def load_model(path) -> keras.Model:
    """Loads a `.keras` embedding (or tuple) model or a SavedModel as a Keras model to explain.

    Args:
        path: a `.keras` file, a SavedModel directory (e.g. `saved_models/name/1`) or a TF Serving
            model root holding numbered versions (the newest is used); see
            `sare_tf.artifacts.descriptor_model.locate_model`.

    Returns:
        An image -> descriptor `keras.Model`. For a SavedModel, only gradient methods apply.
    """

    path, kind = locate_model(path)
    if kind == "saved_model":
        return model_from_savedmodel(path)
    return read_keras_model(path)


def as_embedding_model(model) -> keras.Model:
    """The image -> descriptor model to explain, from a Keras model or a loaded SavedModel.

    Tuple models are unwrapped to their embedding model.
    """
    if not isinstance(model, keras.Model):
        if hasattr(model, "signatures"):
            return model_from_savedmodel(model)
        raise ValueError(
            "Expected a keras.Model or a loaded SavedModel. "
            f"Received: model of type {type(model).__name__}"
        )
    if is_savedmodel_backed(model):
        return model
    if not any(isinstance(layer, NetVLAD) for layer in model.layers):
        try:
            return embedding_of(model)
        except ValueError:
            # Not a sare_tf model: explain it as given if it maps images to vectors.
            pass
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise ValueError(
            f"Model {model.name!r} must map one image batch to one descriptor batch [B, D]. "
            f"Received: inputs={len(model.inputs)}, output_shape={model.output_shape}"
        )
    return model


def uses_low_precision(model: keras.Model) -> bool:
    """True when any layer computes in float16 or bfloat16 (input layers aside)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and uses_low_precision(layer):
            return True
        if layer.compute_dtype in _LOW_PRECISION:
            return True
    return False


def float32_clone(model: keras.Model) -> keras.Model:
    """Rebuilds a model with every layer computing in float32 and copies its weights.

    Under a mixed policy the variables are already float32, so the clone computes the same
    function at full precision.

    Args:
        model: a functional or sequential Keras model.

    Returns:
        `model` itself when it already computes in float32, else the float32 clone.
    """
    if not uses_low_precision(model):
        return model

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    previous = keras.config.dtype_policy()
    # Layers the clone creates without an explicit dtype (input layers) follow the global policy.
    keras.config.set_dtype_policy("float32")
    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer)
    finally:
        keras.config.set_dtype_policy(previous)
    clone.set_weights(model.get_weights())
    return clone


def default_target_layer(model: keras.Model) -> str:
    """Name of the layer that feeds NetVLAD: the last backbone convolution.

    This is `BACKBONES[name].output_layer` of `sare_tf.models` (`block5_conv3` for VGG16).
    """
    netvlad = [layer for layer in model.layers if isinstance(layer, NetVLAD)]
    if len(netvlad) != 1:
        raise ValueError(
            f"Cannot find the default target layer of {model.name!r}: it has {len(netvlad)} "
            "NetVLAD layers. Pass `layer_name` explicitly."
        )
    feature_map = netvlad[0].input
    for layer in model.layers:
        try:
            if layer.output is feature_map:
                return layer.name
        except (AttributeError, ValueError):
            continue
    raise ValueError(
        f"Cannot find the layer feeding NetVLAD in {model.name!r}. Pass `layer_name` explicitly."
    )


def check_target_layer(model: keras.Model, layer_name: str) -> str:
    """Checks that `layer_name` is a layer of `model` with a `[B, h, w, C]` output."""
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(
            f"Layer {layer_name!r} is not in model {model.name!r}. Received: layer_name="
            f"{layer_name!r}; layers: {names}"
        )
    shape = model.get_layer(layer_name).output.shape
    if len(shape) != 4:
        raise ValueError(
            "The target layer must output a feature map [B, h, w, C]. "
            f"Received: layer_name={layer_name!r} with output shape {tuple(shape)}"
        )
    return layer_name
