"""Choosing the dtype policy: bf16 on CPUs, fp16 only with a GPU (or forced)."""

from __future__ import annotations

import keras
import pytest

import sare_tf
from sare_tf.hardware import has_native_bf16
from sare_tf.precision import gpu_available, resolve_precision


def test_explicit_policies_are_set():
    assert sare_tf.set_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert sare_tf.set_precision("float32") == "float32"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
@pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no native bf16")
def test_auto_picks_bfloat16_on_cpu_and_refuses_float16():
    assert resolve_precision("auto") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="no GPU is visible"):
        sare_tf.set_precision("mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # unchanged after the refusal
    assert sare_tf.set_precision("mixed_float16", force=True) == "mixed_float16"


def test_unknown_policy():
    with pytest.raises(ValueError, match="Received: policy='half'"):
        sare_tf.set_precision("half")


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
def test_bfloat16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    import sare_tf.precision

    monkeypatch.setattr(  # where resolve_precision looks it up
        sare_tf.precision,
        "cpu_info",
        lambda: {"model": "Old Xeon", "machine": "x86_64", "cores": 2, "bf16": "none"},
    )
    with pytest.warns(UserWarning, match="Old Xeon.*several times slower than float32"):
        assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert resolve_precision("auto") == "float32"
