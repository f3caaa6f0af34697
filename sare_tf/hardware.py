"""What the CPU can do for bfloat16, read from the operating system.

Mixed bfloat16 is fast on a CPU only when the hardware multiplies bf16 natively: AMX tiles
(Intel Sapphire Rapids and later) or the AVX512-BF16 dot-product instructions (Intel Cooper
Lake, AMD Zen 4 and later); on Arm, the BF16 extension (e.g. AWS Graviton 3). Without them
oneDNN converts and multiplies in float32 at a fraction of float32's speed (measured on this
project's Zen 4 machine with oneDNN limited to the AVX512-VNNI instruction set: a 3x3
512-channel convolution ran at 77 GFLOP/s in bf16 against 215 GFLOP/s in float32), or has no
bf16 convolution at all (AVX2 only).

Everything here is plain text parsing: no TensorFlow import, safe to call anywhere.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag -> what it gives bf16 matmuls, fastest first.
BF16_FLAGS = (
    ("amx_bf16", "amx"),  # x86: AMX tiles
    ("avx512_bf16", "avx512_bf16"),  # x86: AVX512-BF16 dot products
    ("bf16", "arm_bf16"),  # aarch64: BF16 extension (Features line)
)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The CPU model name and feature flags from the text of `/proc/cpuinfo`.

    Args:
        text: the file's content (x86 "model name" / "flags" lines, or aarch64 "Features").

    Returns:
        `(model_name, flags)`; model_name is "" when absent.
    """
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return name, frozenset(flags)


def bf16_support(flags: frozenset[str] | set[str]) -> str:
    """The native bf16 path a CPU offers: "amx", "avx512_bf16", "arm_bf16" or "none"."""
    for flag, kind in BF16_FLAGS:
        if flag in flags:
            return kind
    return "none"


def cpu_info(cpuinfo_path: str | Path = CPUINFO) -> dict:
    """Describes this machine's CPU for bf16 work.

    Args:
        cpuinfo_path: where to read the CPU description (Linux `/proc/cpuinfo`).

    Returns:
        `{"model": str, "machine": str, "cores": int, "bf16": "amx" | "avx512_bf16" |
        "arm_bf16" | "none" | "unknown"}`; "unknown" when the file cannot be read (not Linux).
    """
    path = Path(cpuinfo_path)
    try:
        name, flags = parse_cpuinfo(path.read_text(errors="replace"))
        bf16 = bf16_support(flags)
    except OSError:
        name, bf16 = "", "unknown"
    return {
        "model": name or platform.processor() or "unknown",
        "machine": platform.machine(),
        "cores": os.cpu_count() or 1,
        "bf16": bf16,
    }


def has_native_bf16(info: dict | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (see `cpu_info`)."""
    info = cpu_info() if info is None else info
    return info["bf16"] in ("amx", "avx512_bf16", "arm_bf16")


def describe_cpu(info: dict | None = None) -> str:
    """One line for benchmark headers and logs, e.g. "AMD EPYC (x86_64, 2 cores, bf16: avx512_bf16)"."""
    info = cpu_info() if info is None else info
    return f"{info['model']} ({info['machine']}, {info['cores']} cores, bf16: {info['bf16']})"
