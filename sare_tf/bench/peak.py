"""This machine's sustained convolution throughput (GFLOP/s): the roofline of the model benchmarks.

Times a VGG-like 3x3 convolution (512 -> 512 channels on a 60x80 feature map, batch 8, 'same'
padding: VGG16's conv4 layers at 480x640, 181 GFLOP per call) in each dtype, in a fresh
process per dtype (oneDNN picks and caches kernels per process): `--warmup` untimed calls, then
`--rounds` rounds of `--iterations` calls, keeping the best round. FLOPs count 2 per
multiply-add, zero-padded taps included (see `sare_tf.bench.flops`).

What the model benchmarks achieve is read against this figure: `sare-tf bench extraction`
prints, e.g., "bf16: 2.39 img/s = 449 GFLOP/s = 102% of this CPU's measured bfloat16 conv
peak", so a slow run on a slow machine is told apart from a slow model. A CPU without native
bf16 (see `sare_tf.hardware`) runs bfloat16 far below float32 or, when oneDNN has no bf16
convolution for its instruction set (e.g. AVX2 only), not at all: that dtype is reported as
"not supported" instead of failing.

Usage:
    sare-tf bench peak                                  # float32 and bfloat16, ~25 s
    sare-tf bench peak --dtypes bfloat16 --rounds 5
    sare-tf bench peak --height 30 --width 40 --channels 64 --batch-size 2   # quick check
    python -m sare_tf.bench.peak --json runs/bench/peak.json
"""

from __future__ import annotations

import argparse
import re
import time

from sare_tf.bench.common import add_json_argument, report_header, run_child, write_report

HELP = "This CPU's sustained 3x3-convolution GFLOP/s in float32 and bfloat16 (the roofline)."
DESCRIPTION = __doc__

DTYPES = ("float32", "bfloat16", "float16")

# Keras dtype policy -> the dtype its convolutions compute in.
POLICY_COMPUTE_DTYPE = {
    "float32": "float32",
    "mixed_bfloat16": "bfloat16",
    "bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "float16": "float16",
}

# Measurement settings, shared by `sare-tf bench peak` and the benchmarks that measure the
# peak for their efficiency line.
DEFAULTS = {
    "batch_size": 8,
    "height": 60,
    "width": 80,
    "channels": 512,
    "kernel_size": 3,
    "warmup": 2,
    "rounds": 3,
    "iterations": 3,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=DTYPES,
        default=["float32", "bfloat16"],
        help="compute dtypes to measure (default: float32 bfloat16)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS["batch_size"], help="batch (default 8)"
    )
    parser.add_argument(
        "--height", type=int, default=DEFAULTS["height"], help="feature map height (default 60)"
    )
    parser.add_argument(
        "--width", type=int, default=DEFAULTS["width"], help="feature map width (default 80)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=DEFAULTS["channels"],
        help="input and output channels (default 512)",
    )
    parser.add_argument(
        "--kernel-size", type=int, default=DEFAULTS["kernel_size"], help="kernel side (default 3)"
    )
    parser.add_argument(
        "--warmup", type=int, default=DEFAULTS["warmup"], help="untimed calls (default 2)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULTS["rounds"],
        help="timed rounds; the best is kept (default 3)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULTS["iterations"],
        help="convolutions per timed round (default 3)",
    )
    add_json_argument(parser, "peak")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # child mode


def measure(config: dict, dtype: str) -> dict:
    """Times the convolution in this process (run it in a fresh one).

    Args:
        config: the settings of `DEFAULTS`.
        dtype: "float32", "bfloat16" or "float16".

    Returns:
        `{"dtype", "supported": True, "gflops": best round, "rounds": GFLOP/s per round,
        "seconds_per_call", "flops_per_call", "shape"}`, or `{"dtype", "supported": False,
        "error"}` when TensorFlow cannot run the convolution in this dtype here.
    """
    import numpy as np
    import tensorflow as tf

    from sare_tf.bench.flops import conv_flops

    batch, height, width = config["batch_size"], config["height"], config["width"]
    channels, kernel_size = config["channels"], config["kernel_size"]
    rng = np.random.default_rng(0)
    inputs = tf.cast(rng.standard_normal((batch, height, width, channels), np.float32), dtype)
    kernel = tf.cast(
        rng.standard_normal((kernel_size, kernel_size, channels, channels), np.float32)
        / np.sqrt(kernel_size * kernel_size * channels),
        dtype,
    )
    convolve = tf.function(lambda x, w: tf.nn.conv2d(x, w, strides=1, padding="SAME"))
    flops = batch * conv_flops((height, width), (kernel_size, kernel_size, channels, channels))
    try:
        for _ in range(config["warmup"]):
            convolve(inputs, kernel).numpy()
        rounds = []
        for _ in range(config["rounds"]):
            start = time.perf_counter()
            for _ in range(config["iterations"]):
                convolve(inputs, kernel).numpy()
            rounds.append(config["iterations"] * flops / (time.perf_counter() - start) / 1e9)
    except tf.errors.OpError as error:
        # oneDNN without a kernel for this dtype on this instruction set, e.g. bf16 on AVX2:
        # "could not create a primitive descriptor for the convolution forward propagation".
        message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", error.message.strip())
        return {"dtype": dtype, "supported": False, "error": message[:400]}
    best = max(rounds)
    return {
        "dtype": dtype,
        "supported": True,
        "gflops": round(best, 1),
        "rounds": [round(r, 1) for r in rounds],
        "seconds_per_call": round(flops / best / 1e9, 4),
        "flops_per_call": flops,
        "shape": {
            "batch_size": batch,
            "height": height,
            "width": width,
            "channels": channels,
            "kernel_size": kernel_size,
        },
    }


def measure_in_children(
    dtypes, config: dict | None = None, env: dict | None = None, verbose: bool = True
) -> dict:
    """Measures the peak of each dtype in a fresh process.

    Args:
        dtypes: compute dtypes ("float32", "bfloat16", "float16").
        config: settings overriding `DEFAULTS`.
        env: extra environment variables for the children (e.g. `ONEDNN_MAX_CPU_ISA`).
        verbose: print one line per dtype.

    Returns:
        `{dtype: measure(...) result}`.
    """
    config = {**DEFAULTS, **(config or {})}
    flags = ["--single"]
    for key, value in config.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    results = {}
    for dtype in dict.fromkeys(dtypes):
        try:
            results[dtype] = run_child("peak", [*flags, "--dtypes", dtype], env=env)
        except ChildProcessError as error:
            # A child killed by an unsupported instruction must not end the whole benchmark.
            results[dtype] = {
                "dtype": dtype,
                "supported": False,
                "failed": True,
                "error": str(error)[-1500:],
            }
        if verbose:
            print(describe_peak(results[dtype]), flush=True)
    return results


def describe_peak(result: dict) -> str:
    """One line for a peak result, e.g. "bfloat16 conv peak: 440.1 GFLOP/s (0.412 s per call)"."""
    if result.get("failed"):
        return f"{result['dtype']} conv peak: the measurement failed: {result['error']}"
    if not result["supported"]:
        first_line = result["error"].splitlines()[0] if result["error"] else ""
        return f"{result['dtype']} conv peak: not supported on this CPU ({first_line[:160]})"
    line = f"{result['dtype']} conv peak: {result['gflops']:.1f} GFLOP/s"
    if "seconds_per_call" in result:
        line += f" ({result['seconds_per_call']:.3f} s per call)"
    return line


def load_peak(path: str) -> dict:
    """The `{dtype: result}` of a report written by `sare-tf bench peak`."""
    import json
    from pathlib import Path

    try:
        report = json.loads(Path(path).read_text())
        return {row["dtype"]: row for row in report["results"]}
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Peak report not found. Received: path={path!r}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Not a report of `sare-tf bench peak` (expected a 'results' list of dtype rows). "
            f"Received: path={path!r}"
        ) from error


def add_peak_arguments(parser: argparse.ArgumentParser) -> None:
    """`--no-peak` and `--peak-json` for benchmarks that report their share of the peak."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-peak",
        action="store_true",
        help="do not measure this CPU's conv peak (no efficiency line)",
    )
    group.add_argument(
        "--peak-json",
        default=None,
        metavar="PATH",
        help="read the peak from a `sare-tf bench peak` report instead of measuring it "
        "(10-15 s per dtype)",
    )


def peak_for(args: argparse.Namespace, policies) -> dict | None:
    """The peak results needed by a benchmark's `--no-peak` / `--peak-json` flags, or None."""
    if args.no_peak:
        return None
    dtypes = [POLICY_COMPUTE_DTYPE.get(policy, policy) for policy in policies]
    if args.peak_json:
        peaks = load_peak(args.peak_json)
        print(f"conv peak read from {args.peak_json}:")
        for dtype in dict.fromkeys(dtypes):
            if dtype in peaks:
                print(describe_peak(peaks[dtype]))
        return peaks
    print("measuring this CPU's conv peak (`--no-peak` skips it) ...", flush=True)
    return measure_in_children(dtypes)


def efficiency(achieved_flops_per_second: float, policy: str, peaks: dict | None) -> dict:
    """Achieved GFLOP/s and its share of the measured peak of the policy's compute dtype.

    Args:
        achieved_flops_per_second: the benchmark's FLOPs divided by its time.
        policy: the Keras dtype policy it ran under.
        peaks: `{dtype: peak result}` or None.

    Returns:
        `{"gflops", "peak_dtype", "peak_gflops", "fraction_of_peak"}`; the last two are None when
        no peak was measured or the dtype is not supported.
    """
    dtype = POLICY_COMPUTE_DTYPE.get(policy, policy)
    peak = (peaks or {}).get(dtype)
    peak_gflops = peak["gflops"] if peak and peak["supported"] else None
    gflops = achieved_flops_per_second / 1e9
    return {
        "gflops": round(gflops, 1),
        "peak_dtype": dtype,
        "peak_gflops": peak_gflops,
        "fraction_of_peak": round(gflops / peak_gflops, 3) if peak_gflops else None,
    }


def describe_efficiency(label: str, rate: str, result: dict) -> str:
    """One efficiency line, e.g. "bf16: 2.39 img/s = 449 GFLOP/s = 102% of this CPU's measured
    bfloat16 conv peak (440 GFLOP/s)".

    Args:
        label: what was measured, e.g. "mixed_bfloat16 full".
        rate: its throughput as text, e.g. "2.39 img/s".
        result: an `efficiency(...)` result.
    """
    line = f"{label}: {rate} = {result['gflops']:.0f} GFLOP/s"
    if result["fraction_of_peak"] is not None:
        return (
            f"{line} = {100 * result['fraction_of_peak']:.0f}% of this CPU's measured "
            f"{result['peak_dtype']} conv peak ({result['peak_gflops']:.0f} GFLOP/s)"
        )
    if result["peak_gflops"] is None and result.get("peak_dtype"):
        return f"{line} (no measured {result['peak_dtype']} conv peak to compare with)"
    return line


def run(args: argparse.Namespace) -> int:
    config = {key: getattr(args, key) for key in DEFAULTS}
    if args.single:
        import json
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(measure(config, args.dtypes[0])))
        return 0
    report = report_header("peak")
    print(
        f"3x3 conv {args.channels}->{args.channels} on {args.height}x{args.width}, batch "
        f"{args.batch_size}: best of {args.rounds} rounds of {args.iterations} calls",
        flush=True,
    )
    results = measure_in_children(args.dtypes, config)
    write_report(args.json, report, config=config, results=list(results.values()))
    return 0
