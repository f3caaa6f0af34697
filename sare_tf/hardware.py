"""What the CPU can do for bfloat16, and the cores this process may use, read from the operating system.

Mixed bfloat16 is fast on a CPU only when the hardware multiplies bf16 natively: AMX tiles
(Intel Sapphire Rapids and later) or the AVX512-BF16 dot-product instructions (Intel Cooper
Lake, AMD Zen 4 and later); on Arm, the BF16 extension (e.g. AWS Graviton 3). Without them
oneDNN converts and multiplies in float32 at a fraction of float32's speed (measured on this
project's Zen 4 machine with oneDNN limited to the AVX512-VNNI instruction set: a 3x3
512-channel convolution ran at 77 GFLOP/s in bf16 against 215 GFLOP/s in float32), or has no
bf16 convolution at all (AVX2 only).

oneDNN (TensorFlow's and PyTorch's CPU kernels) can be told to use less than the CPU has with
`ONEDNN_MAX_CPU_ISA` (e.g. `AVX2`, to measure how a machine without AVX-512 fares); bf16 is then
native only when the cap still includes the bf16 instructions, and `cpu_info` says so.

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


# oneDNN's x86 instruction-set caps (`ONEDNN_MAX_CPU_ISA`) from least to most, each with the
# native bf16 path it allows; the AVX10 names are the newer spellings of the last two.
ONEDNN_ISA_BF16 = {
    "SSE41": "none", "AVX": "none", "AVX2": "none", "AVX2_VNNI": "none", "AVX2_VNNI_2": "none",
    "AVX512_CORE": "none", "AVX512_CORE_VNNI": "none", "AVX512_CORE_BF16": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16", "AVX10_1_512": "avx512_bf16",
    "AVX512_CORE_AMX": "amx", "AVX10_1_512_AMX": "amx", "AVX512_CORE_AMX_FP16": "amx",
    "AVX10_1_512_AMX_FP16": "amx", "ALL": "amx", "DEFAULT": "amx",
}  # fmt: skip
_BF16_RANK = {"none": 0, "avx512_bf16": 1, "amx": 2}
# The caps that leave out AVX-512 altogether (what a CPU with AVX2 only runs).
ONEDNN_CAPS_WITHOUT_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def bf16_support(flags: frozenset[str] | set[str], isa_cap: str | None = None) -> str:
    """The native bf16 path a CPU offers: "amx", "avx512_bf16", "arm_bf16" or "none".

    Args:
        flags: the CPU's feature flags (`parse_cpuinfo`).
        isa_cap: oneDNN's instruction-set cap (`ONEDNN_MAX_CPU_ISA`), None for none; an x86
            path above the cap is not used.
    """
    kind = next((kind for flag, kind in BF16_FLAGS if flag in flags), "none")
    allowed = ONEDNN_ISA_BF16.get((isa_cap or "ALL").upper(), "amx")
    if kind in _BF16_RANK and _BF16_RANK[kind] > _BF16_RANK[allowed]:
        return allowed
    return kind


def onednn_isa_cap(environ=None) -> str | None:
    """oneDNN's instruction-set cap from the environment (`ONEDNN_MAX_CPU_ISA`, or its former
    name `DNNL_MAX_CPU_ISA`), upper-cased; None when unset."""
    environ = os.environ if environ is None else environ
    value = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_info(cpuinfo_path: str | Path = CPUINFO, environ=None) -> dict:
    """Describes this machine's CPU for bf16 work.

    Args:
        cpuinfo_path: where to read the CPU description (Linux `/proc/cpuinfo`).
        environ: the environment holding oneDNN's cap (default `os.environ`).

    Returns:
        `{"model": str, "machine": str, "cores": int, "bf16": "amx" | "avx512_bf16" |
        "arm_bf16" | "none" | "unknown", "isa_cap": str | None}`; bf16 is "unknown" when the
        file cannot be read (not Linux), and what the cap leaves when oneDNN is capped.
    """
    path = Path(cpuinfo_path)
    isa_cap = onednn_isa_cap(environ)
    try:
        name, flags = parse_cpuinfo(path.read_text(errors="replace"))
        bf16 = bf16_support(flags, isa_cap)
    except OSError:
        name, bf16 = "", "unknown"
    return {
        "model": name or platform.processor() or "unknown",
        "machine": platform.machine(),
        "cores": usable_cores(),
        "bf16": bf16,
        "isa_cap": isa_cap,
    }


def has_native_bf16(info: dict | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (see `cpu_info`)."""
    info = cpu_info() if info is None else info
    return info["bf16"] in ("amx", "avx512_bf16", "arm_bf16")


def describe_cpu(info: dict | None = None) -> str:
    """One line for benchmark headers and logs, e.g. "AMD EPYC (x86_64, 2 cores, bf16: avx512_bf16)"."""
    info = cpu_info() if info is None else info
    cap = f", oneDNN capped at {info['isa_cap']}" if info.get("isa_cap") else ""
    return f"{info['model']} ({info['machine']}, {info['cores']} cores, bf16: {info['bf16']}{cap})"
