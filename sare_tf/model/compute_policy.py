"""Which dtype policy a model's Keras-core layers compute in, read and switched in one place.

sare_tf's own layers (preprocessing, aggregators, whitening) keep float32 maths under any
policy and the "descriptor" output stays float32; only the backbone's Keras layers switch, and
sare_tf's stand-ins for them (`computes_in_backbone_policy`, e.g. its Conv2D).
Weights always stay float32.
"""

from __future__ import annotations

import collections

import keras

SWITCHABLE = ("float32", "mixed_bfloat16", "mixed_float16")


def backbone_policy(model: keras.Model) -> str:
    """The policy most layers of `model` compute in ("float32", "mixed_bfloat16", ...)."""
    counts = collections.Counter(
        layer.dtype_policy.name for layer in model.layers if hasattr(layer, "dtype_policy")
    )
    mixed = [name for name in counts if name.startswith("mixed_")]
    return max(mixed, key=counts.__getitem__) if mixed else "float32"


def is_backbone_layer(layer) -> bool:
    """Whether a sare_tf layer computes like the Keras layer it stands in for (it says so with
    `computes_in_backbone_policy = True`, e.g. `sare_tf.layers.Conv2D`)."""
    return bool(getattr(layer, "computes_in_backbone_policy", False))


def set_backbone_policy(model: keras.Model, policy: str) -> str:
    """Switches the Keras-core layers of `model` (in place) to `policy`, one of `SWITCHABLE`."""
    if policy not in SWITCHABLE:
        raise ValueError(f"Unknown policy. Expected one of {SWITCHABLE}. Received: {policy!r}")
    for layer in model.layers:
        if (
            (type(layer).__module__.startswith("keras.") or is_backbone_layer(layer))
            and layer.name != "descriptor"
            and not isinstance(layer, keras.layers.InputLayer)
            and layer.dtype_policy.name in SWITCHABLE
        ):
            layer.dtype_policy = policy
    return policy
