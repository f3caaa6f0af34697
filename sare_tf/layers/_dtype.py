"""Dtype helpers shared by the layers that must compute in float32 under mixed precision."""

from __future__ import annotations

import keras


def float32_compute_policy(dtype=None):
    """Returns a dtype policy for a layer whose maths must stay in float32.

    Under ``mixed_bfloat16`` / ``mixed_float16`` a plain layer would autocast its inputs and
    weights to half precision; softmax and normalisations lose too much there, so these
    layers keep float32 (or float64 when explicitly asked for) for both.
    """
    policy = keras.dtype_policies.get(dtype if dtype is not None else keras.config.dtype_policy())
    if (
        policy.compute_dtype in ("float32", "float64")
        and policy.variable_dtype == policy.compute_dtype
    ):
        return policy
    return keras.dtype_policies.get("float32")
