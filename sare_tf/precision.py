"""Choosing the mixed-precision policy for the hardware at hand.

On a GPU, ``mixed_float16`` (with loss scaling, which Keras adds in ``compile``) is the fast
path. On a CPU, ``mixed_bfloat16`` runs VGG16 about 7x faster than float32 on AMX-capable
Xeons and about 2x faster on CPUs with AVX512-BF16 (AMD Zen 4: 2.4 vs 1.2 img/s at 480x640),
both through oneDNN; on a CPU without native bf16 it is several times slower than float32, so
"auto" picks float32 there (see `sare_tf.hardware`). ``mixed_float16`` on a CPU falls back to
slow emulation: it is refused unless forced.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from sare_tf.hardware import cpu_info, describe_cpu, has_native_bf16
from sare_tf.registry import PRECISION_POLICIES

POLICIES = PRECISION_POLICIES


def gpu_available() -> bool:
    """Returns True when TensorFlow sees at least one GPU."""
    if not tf.test.is_built_with_cuda() and not tf.test.is_built_with_rocm():
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def auto_precision(gpu: bool, cpu: dict) -> str:
    """The policy "auto" stands for, given the hardware.

    Args:
        gpu: whether TensorFlow sees a GPU.
        cpu: `sare_tf.hardware.cpu_info()`.

    Returns:
        "mixed_float16" with a GPU; "mixed_bfloat16" on a CPU that multiplies bf16 natively
        (AMX, AVX512-BF16, Arm BF16); "float32" otherwise.
    """
    if gpu:
        return "mixed_float16"
    return "mixed_bfloat16" if has_native_bf16(cpu) else "float32"


def resolve_precision(policy: str = "auto", force: bool = False) -> str:
    """Turns a requested policy name into the one to use on this machine.

    Args:
        policy: one of "auto", "float32", "mixed_float16", "mixed_bfloat16". "auto" is
            `auto_precision` for this machine.
        force: allow "mixed_float16" without a GPU.

    Returns:
        The Keras dtype policy name.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown precision policy. Expected one of {POLICIES}. Received: policy={policy!r}"
        )
    if policy == "auto":
        return auto_precision(gpu_available(), cpu_info())
    if policy == "mixed_bfloat16" and not gpu_available():
        cpu = cpu_info()
        if cpu["bf16"] == "none":
            warnings.warn(
                f"mixed_bfloat16 on a CPU without native bf16 ({describe_cpu(cpu)}): oneDNN "
                "emulates it, several times slower than float32. 'auto' picks float32 here.",
                stacklevel=2,
            )
    if policy == "mixed_float16" and not force and not gpu_available():
        raise ValueError(
            "mixed_float16 was requested but no GPU is visible: on a CPU float16 matmuls and "
            "convolutions are emulated and many times slower than float32. Use "
            "'mixed_bfloat16' (fast on CPUs with AMX/AVX512-BF16) or 'float32', or pass "
            "force=True (CLI: --force-precision) to run it anyway. Received: policy='mixed_float16'"
        )
    return policy


def set_precision(policy: str = "auto", force: bool = False) -> str:
    """Sets the global Keras dtype policy for layers built afterwards.

    Softmax, normalisations, NetVLAD, PCA whitening, descriptor outputs and losses in
    sare_tf compute in float32 whatever the policy.

    Args:
        policy: "auto" (mixed_float16 with a GPU, mixed_bfloat16 on a CPU with native bf16,
            else float32), "float32",
            "mixed_float16" or "mixed_bfloat16".
        force: allow "mixed_float16" on a CPU.

    Returns:
        The policy name that was set.

    Example:
        >>> import sare_tf
        >>> sare_tf.set_precision("float32")
        'float32'
    """
    name = resolve_precision(policy, force=force)
    keras.config.set_dtype_policy(name)
    return name
