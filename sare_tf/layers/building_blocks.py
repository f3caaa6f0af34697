"""Small pieces the aggregator layers share: argument checks and dense weights."""

from __future__ import annotations

import keras


def check_positive_ints(**values) -> None:
    """Refuses any argument that is not a positive integer, naming it."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def add_dense(layer: keras.layers.Layer, name: str, fan_in: int, fan_out: int) -> tuple:
    """`(kernel [fan_in, fan_out], bias [fan_out])` weights of a fully connected map on `layer`."""
    return (
        layer.add_weight(
            name=f"{name}_kernel", shape=(fan_in, fan_out), initializer="glorot_uniform"
        ),
        layer.add_weight(name=f"{name}_bias", shape=(fan_out,), initializer="zeros"),
    )
