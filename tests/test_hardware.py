"""Reading the CPU's bf16 support, and what "auto" precision makes of it."""

from __future__ import annotations

import pytest

from sare_tf.hardware import bf16_support, cpu_info, describe_cpu, has_native_bf16, parse_cpuinfo
from sare_tf.precision import auto_precision

# Shortened /proc/cpuinfo texts in the kernel's layout (two processors on x86).
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
CASCADE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags\t\t: avx2 avx512f avx512bw avx512_vnni
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha3 sve bf16 i8mm
CPU implementer\t: 0x41
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
"""


@pytest.mark.parametrize(
    "text, name, expected",
    [
        (ZEN4, "AMD EPYC 9R14", "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8488C", "amx"),
        (CASCADE_LAKE, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "none"),
        (GRAVITON3, "", "arm_bf16"),
        (GRAVITON2, "", "none"),
        ("", "", "none"),
    ],
)
def test_parse_cpuinfo_and_bf16_support(text, name, expected):
    model, flags = parse_cpuinfo(text)
    assert model == name
    assert bf16_support(flags) == expected


def test_flags_are_whole_words():
    # "avx512_bf16" must not be found inside another flag, nor "bf16" inside "avx512_bf16".
    _, flags = parse_cpuinfo("flags : avx512_bf16x amx_bf16_future\n")
    assert bf16_support(flags) == "none"


def test_cpu_info_from_a_file_and_without_one(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE_RAPIDS)
    info = cpu_info(path, environ={})
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert info["bf16"] == "amx"
    assert info["cores"] >= 1
    assert has_native_bf16(info)
    assert "bf16: amx" in describe_cpu(info)
    missing = cpu_info(tmp_path / "absent", environ={})
    assert missing["bf16"] == "unknown"
    assert not has_native_bf16(missing)


@pytest.mark.parametrize(
    "gpu, text, expected",
    [
        (True, CASCADE_LAKE, "mixed_float16"),
        (False, SAPPHIRE_RAPIDS, "mixed_bfloat16"),
        (False, ZEN4, "mixed_bfloat16"),
        (False, GRAVITON3, "mixed_bfloat16"),
        (False, CASCADE_LAKE, "float32"),
        (False, GRAVITON2, "float32"),
    ],
)
def test_auto_precision_follows_the_hardware(tmp_path, gpu, text, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert auto_precision(gpu, cpu_info(path, environ={})) == expected


@pytest.mark.parametrize(
    "text, cap, expected",
    [
        (SAPPHIRE_RAPIDS, "AVX2", "none"),
        (SAPPHIRE_RAPIDS, "avx512_core_vnni", "none"),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", "amx"),
        (ZEN4, "AVX2", "none"),
        (ZEN4, "AVX512_CORE_AMX", "avx512_bf16"),  # a cap never adds what the CPU lacks
        (ZEN4, "ALL", "avx512_bf16"),
        (GRAVITON3, "AVX2", "arm_bf16"),  # an x86 cap says nothing about Arm
    ],
)
def test_a_onednn_cap_removes_the_bf16_paths_above_it(tmp_path, text, cap, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    info = cpu_info(path, environ={"ONEDNN_MAX_CPU_ISA": cap})
    assert info["bf16"] == expected
    assert info["isa_cap"] == cap.upper()
    assert f"oneDNN capped at {cap.upper()}" in describe_cpu(info)
    assert (auto_precision(False, info) == "mixed_bfloat16") == (expected != "none")
    assert cpu_info(path, environ={"DNNL_MAX_CPU_ISA": cap})["bf16"] == expected
