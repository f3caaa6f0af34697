"""Backbone-specific pixel preprocessing inside the model, so exported models take raw RGB."""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.image_size import check_image_size

# ImageNet statistics used by the Keras applications' preprocess_input functions.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
MODES = ("caffe", "torch", "tf", "rgb_mean", "none")


@keras.saving.register_keras_serializable(package="sare_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a backbone was trained on.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`: "caffe" (VGG16,
    ResNet50: RGB->BGR, minus the ImageNet BGR mean), "torch" (scale to [0, 1], ImageNet
    mean/std), "tf" (scale to [-1, 1]) and "none" (models that preprocess themselves), plus
    "rgb_mean": RGB kept, 0-255 kept, minus a per-channel `mean` (the MatConvNet convention of
    the NetVLAD authors' models, also used by OpenIBL).
    Computes in float32; the next layer casts to the compute dtype.

    The layer also keeps the `(height, width)` the model was trained at (as KerasHub's
    `ImageConverter(image_size=...)` does): it does not resize, it records, so that a saved model
    tells `export`, `evaluate` and `saliency` its size (`sare_tf.artifacts.descriptor_model`).

    Args:
        mode: one of "caffe", "torch", "tf", "rgb_mean", "none".
        mean: `(r, g, b)` on the 0-255 scale, subtracted in "rgb_mean" mode (required there,
            refused elsewhere).
        image_size: `(height, width)` the model was trained at, or None when unknown.
        **kwargs: base layer arguments.
    """

    def __init__(self, mode: str = "caffe", image_size=None, mean=None, **kwargs):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
        if (mode == "rgb_mean") != (mean is not None):
            raise ValueError(
                "`mean` is required in mode 'rgb_mean' and only there. "
                f"Received: mode={mode!r}, mean={mean!r}"
            )
        if mean is not None:
            mean = [float(value) for value in mean]
            if len(mean) != 3:
                raise ValueError(f"`mean` must have 3 values (R, G, B). Received: mean={mean!r}")
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mode = mode
        self.image_size = check_image_size(image_size)
        self.mean = mean

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype="float32")
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype="float32")
            std = ops.convert_to_tensor(_TORCH_STD, dtype="float32")
            return (x / 255.0 - mean) / std
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "rgb_mean":
            return x - ops.convert_to_tensor(self.mean, dtype="float32")
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "image_size": None if self.image_size is None else list(self.image_size),
                "mean": self.mean,
            }
        )
        return config
