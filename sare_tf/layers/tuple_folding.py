"""Folding a batch of image tuples into one image batch and back, so the backbone runs once."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sare_tf")
class FoldTuples(keras.layers.Layer):
    """`[B, T, H, W, C]` -> `[B * T, H, W, C]` (tuple members stay consecutive)."""

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1, shape[2], shape[3], shape[4]))

    def compute_output_shape(self, input_shape):
        batch = (
            None
            if input_shape[0] is None or input_shape[1] is None
            else input_shape[0] * input_shape[1]
        )
        return (batch, *input_shape[2:])


@keras.saving.register_keras_serializable(package="sare_tf")
class UnfoldTuples(keras.layers.Layer):
    """`[B * T, D]` -> `[B, T, D]`.

    Args:
        tuple_size: T, the number of images per tuple (query, positive, N negatives: 2 + N).
    """

    def __init__(self, tuple_size: int, **kwargs):
        if not isinstance(tuple_size, int) or tuple_size < 1:
            raise ValueError(
                f"`tuple_size` must be a positive integer. Received: tuple_size={tuple_size!r}"
            )
        super().__init__(**kwargs)
        self.tuple_size = tuple_size

    def call(self, inputs):
        return ops.reshape(inputs, (-1, self.tuple_size, ops.shape(inputs)[-1]))

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // self.tuple_size
        return (batch, self.tuple_size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"tuple_size": self.tuple_size})
        return config
