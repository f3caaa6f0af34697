"""Choosing the mixed-precision policy for the hardware at hand.

On a GPU, ``mixed_float16`` (with loss scaling, which Keras adds in ``compile``) is the fast
path. On a CPU, ``mixed_bfloat16`` runs VGG16 about 7x faster than float32 on AMX-capable
Xeons through oneDNN, while ``mixed_float16`` falls back to slow emulation: it is refused
on a CPU unless forced.
"""

from __future__ import annotations

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def gpu_available() -> bool:
    """Returns True when TensorFlow sees at least one GPU."""
    import tensorflow as tf

    if not tf.test.is_built_with_cuda() and not tf.test.is_built_with_rocm():
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(policy: str = "auto", force: bool = False) -> str:
    """Turns a requested policy name into the one to use on this machine.

    Args:
        policy: one of "auto", "float32", "mixed_float16", "mixed_bfloat16".
        force: allow "mixed_float16" without a GPU.

    Returns:
        The Keras dtype policy name.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown precision policy. Expected one of {POLICIES}. Received: policy={policy!r}"
        )
    if policy == "auto":
        return "mixed_float16" if gpu_available() else "mixed_bfloat16"
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
        policy: "auto" (mixed_float16 with a GPU, mixed_bfloat16 on a CPU), "float32",
            "mixed_float16" or "mixed_bfloat16".
        force: allow "mixed_float16" on a CPU.

    Returns:
        The policy name that was set.

    Example:
        >>> import sare_tf
        >>> sare_tf.set_precision("float32")
        'float32'
    """
    import keras

    name = resolve_precision(policy, force=force)
    keras.config.set_dtype_policy(name)
    return name
