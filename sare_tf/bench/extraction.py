"""Descriptor extraction throughput: VGG16 + NetVLAD vs the bare backbone, in TF, ONNX Runtime, LiteRT.

Each configuration runs in a fresh subprocess (the dtype policy is global and oneDNN caches
kernels per process): build the model with random weights (no download), warm up, then time
`--rounds` rounds of `--batches` batches and keep the best round, as the design's reference
figures were taken. Inputs are random pixels already in memory, so this measures the model,
not JPEG decoding (see `sare-tf bench pipeline` for that).

Each result is also read against the hardware: the convolution FLOPs per image, counted from
the model's layers at the image size (VGG16 to conv5_3: 188 GFLOP at 480x640), times img/s
gives the GFLOP/s achieved, printed as a share of this CPU's measured conv peak in the same
dtype (`sare-tf bench peak`, measured first unless `--no-peak` or `--peak-json`), e.g.
"mixed_bfloat16 full: 2.39 img/s = 449 GFLOP/s = 102% of this CPU's measured bfloat16 conv
peak". Near 100%, the machine is the limit, not sare_tf.

`--runtime onnx litert` also measures the exported artefacts (`sare-tf export --format ...`) of
the same random model: each `--quantize` mode the runtime has (ONNX: none, int8; LiteRT: none,
dynamic, int8), int8 calibrated on `--calibration-count` smooth random JPEGs (speed does not depend
on what calibrates it; recall does: measure that with `sare-tf evaluate` on your data). Each is
printed as a ratio to TF's mixed_bfloat16 and float32 runs of the same run, with the cosine of its
descriptors to the Keras float32 model's on the timed batch, and against the float32 conv peak
(int8 has no measured peak of its own: above 100% means int8 beats the float32 roofline).

`--runtime torch` times PyTorch's own modules of the same model in the same run (pytorch-NetVlad's
VGG16 `features[:-2]` + `NetVLAD`, or sare_tf's `tiny` written in torch; channels_last,
inference_mode, `torch.autocast` for mixed_bfloat16), and every TF row is printed as a ratio to
PyTorch's row of the same part and precision.

The full model's time is split by stage (`--stages`, on by default for TF's full model):
preprocessing, backbone, and the head after it (the cast to float32, NetVLAD's normalisation,
soft assignment, residual sums and output normalisations), each timed alone on the tensor the
previous stage produced; the head's share of the total is printed
(`sare_tf.bench.stage_profile`).

To see how a CPU without AVX-512 or native bf16 fares on one that has them, cap oneDNN's
instruction set for TF and PyTorch alike: `ONEDNN_MAX_CPU_ISA=AVX2 sare-tf bench extraction`
(PyTorch's own kernels are then capped at AVX2 too, and the report's CPU line says so). This is
an emulation: the clock, caches and memory are still this machine's.

Usage:
    sare-tf bench extraction                      # 480x640, float32 and mixed_bfloat16, + peak
    sare-tf bench extraction --runtime tf torch --precision float32 --batch-size 4
    sare-tf bench extraction --runtime tf torch --precision float32 --batch-size 4 --repeats 3
    sare-tf bench extraction --runtime tf onnx litert --part full --batch-size 1
    sare-tf bench extraction --runtime onnx --quantize int8 --batch-size 4
    sare-tf bench extraction --precision mixed_bfloat16 --part full
    sare-tf bench extraction --precision mixed_bfloat16 --batch-size 8 --rounds 2
    sare-tf bench extraction --height 240 --width 320 --json runs/bench/extraction.json
    sare-tf bench extraction --peak-json runs/bench/peak.json   # reuse a measured peak
"""

from __future__ import annotations

import argparse
import json
import os
import time

from sare_tf.bench.common import (
    add_json_argument,
    add_repeats_argument,
    describe_ratios_by_repeat,
    ratios_by_repeat,
    report_header,
    run_child,
    write_report,
)
from sare_tf.bench.peak import add_peak_arguments, describe_efficiency, efficiency, peak_for
from sare_tf.bench.stage_profile import describe_profile
from sare_tf.registry import BACKBONE_NAMES, RUNTIME_KINDS

HELP = "Descriptor extraction img/s (VGG16 + NetVLAD vs bare backbone) and its share of the peak."
DESCRIPTION = __doc__

# Flags passed unchanged to every child process.
CHILD_FLAGS = (
    "stages",
    "backbone",
    "num_clusters",
    "height",
    "width",
    "batch_size",
    "batches",
    "rounds",
    "warmup",
    "calibration_count",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone", default="vgg16", choices=BACKBONE_NAMES, help="backbone (default vgg16)"
    )
    parser.add_argument(
        "--num-clusters", type=int, default=64, help="NetVLAD clusters K (default 64)"
    )
    parser.add_argument(
        "--height", type=int, default=480, help="image height (default 480, as in the paper)"
    )
    parser.add_argument("--width", type=int, default=640, help="image width (default 640)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images per forward pass (default 8)"
    )
    parser.add_argument(
        "--batches", type=int, default=3, help="batches per timed round (default 3)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="timed rounds; the best is kept (default 2)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches (default 1)")
    add_repeats_argument(parser)
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="dtype policies to measure (default both)",
    )
    parser.add_argument(
        "--part",
        nargs="+",
        default=["backbone", "full"],
        help="'backbone' (cropped backbone only), 'full' (+NetVLAD, L2)",
    )
    _add_runtime_arguments(parser)
    add_peak_arguments(parser)
    add_json_argument(parser, "extraction")
    parser.add_argument(
        "--single", action="store_true", help=argparse.SUPPRESS
    )  # child-process mode


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Which runtimes run the model, their quantizations, and the per-stage split."""
    parser.add_argument(
        "--runtime",
        nargs="+",
        default=["tf"],
        choices=(*RUNTIME_KINDS, "torch"),
        help="runtimes to measure (default tf); onnx / litert run the exported full model, "
        "torch PyTorch's modules of the same model (vgg16 or tiny; the test extra)",
    )
    parser.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split TF's full-model time by stage (default on)",
    )
    parser.add_argument(
        "--quantize",
        nargs="+",
        default=["none", "dynamic", "int8"],
        help="onnx / litert modes to measure, each where the runtime has it (default all)",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=8,
        help="random JPEGs that calibrate the int8 exports (default 8)",
    )


def child_flags(args) -> list[str]:
    """The CHILD_FLAGS of `args` as command-line flags (booleans as --flag / --no-flag)."""
    flags = []
    for flag in CHILD_FLAGS:
        value, option = getattr(args, flag), flag.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{option}" if value else f"--no-{option}")
        else:
            flags += [f"--{option}", str(value)]
    return flags


def _timed_rounds(args, forward, images) -> list[float]:
    """img/s of each timed round of `forward(images)` after the warm-up."""
    for _ in range(args.warmup):
        forward(images)
    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.batches):
            forward(images)
        rounds.append(args.batches * args.batch_size / (time.perf_counter() - start))
    return rounds


def _random_images(args):
    import numpy as np

    shape = (args.batch_size, args.height, args.width, 3)
    return np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)


def calibration_jpegs(folder: str, count: int, height: int, width: int) -> list[str]:
    """`count` smooth random JPEGs (what calibrates a benchmark's int8 export)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), np.uint8)
        path = os.path.join(folder, f"calibration_{i:03d}.jpg")
        Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def measure_torch(args: argparse.Namespace) -> dict:
    """PyTorch's modules of the same model, timed like TF's (same pixels, batch and rounds)."""
    import torch

    from sare_tf.bench.torch_models import build_embedding, imagenet_normalize

    torch.set_num_threads(os.cpu_count() or 1)
    features, pool = build_embedding(torch, args.backbone, args.num_clusters)
    parts = [features] if args.part == "backbone" else [features, pool]
    model = torch.nn.Sequential(*parts).eval().to(memory_format=torch.channels_last)
    images = torch.from_numpy(_random_images(args).transpose(0, 3, 1, 2).copy())
    images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "mixed_bfloat16")

    def forward(x):
        with torch.inference_mode(), autocast:
            return model(imagenet_normalize(torch, x)).float()

    rounds = _timed_rounds(args, forward, images)
    return {
        "runtime": "torch",
        "torch_version": torch.__version__,
        "backbone": args.backbone,
        "part": args.part,
        "precision": args.precision,
        "image_size": [args.height, args.width],
        "batch_size": args.batch_size,
        "conv_flops_per_image": _conv_flops(_keras_model(args)),
        "images_per_second": max(rounds),
        "rounds": rounds,
    }


def _keras_model(args):
    """The Keras model of this configuration: the full model, or its cropped backbone."""
    from sare_tf.models import build_embedding_model, feature_model

    model = build_embedding_model(
        args.backbone, num_clusters=args.num_clusters, input_shape=(args.height, args.width, 3)
    )
    return feature_model(model) if args.part == "backbone" else model


def _conv_flops(model) -> float:
    """Convolution FLOPs per image of `model` at its input size."""
    from sare_tf.bench.flops import model_conv_flops

    return sum(c.flops for c in model_conv_flops(model))


def measure(args: argparse.Namespace) -> dict:
    """Runs one configuration in this process and returns its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.runtime == "torch":
        return measure_torch(args)
    import keras
    import numpy as np
    import tensorflow as tf

    # An exported runtime's model is built in float32; its `precision` is the quantization.
    keras.config.set_dtype_policy(args.precision if args.runtime == "tf" else "float32")
    keras.utils.set_random_seed(0)
    model = _keras_model(args)
    result = {
        "runtime": args.runtime,
        "backbone": args.backbone,
        "part": args.part,
        "precision": args.precision,
        "image_size": [args.height, args.width],
        "batch_size": args.batch_size,
        "conv_flops_per_image": _conv_flops(model),
    }
    images = _random_images(args)
    if args.runtime == "tf":
        compiled = tf.function(lambda x: model(x, training=False), jit_compile=False)
        rounds = _timed_rounds(args, lambda x: compiled(x).numpy(), tf.constant(images))
        if args.stages and args.part == "full":
            from sare_tf.bench.stage_profile import profile_stages

            result["stage_profile"] = profile_stages(model, images, rounds=args.rounds)
    else:
        forward, cosines, export_seconds = _exported(args, model, images)
        rounds = _timed_rounds(args, forward, images)
        result.update(
            cosine_to_float32={"min": float(np.min(cosines)), "mean": float(np.mean(cosines))},
            export_seconds=round(export_seconds, 1),
        )
    return {**result, "images_per_second": max(rounds), "rounds": rounds}


def _exported(args, model, images):
    """The exported model's forward function, its descriptors' cosines to the Keras model's on
    `images`, and the export's wall time."""
    import tempfile

    import numpy as np

    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.evaluation.quantization import row_cosines
    from sare_tf.export import exporter

    export = exporter(args.runtime)
    reference = np.asarray(model(images, training=False))
    with tempfile.TemporaryDirectory(prefix="sare-bench-") as folder:
        calibration = None
        if args.precision == "int8":
            calibration = calibration_jpegs(folder, args.calibration_count, args.height, args.width)
        start = time.perf_counter()
        info = export(
            model, root=folder, name="bench", image_size=(args.height, args.width),
            quantize=args.precision, calibration_paths=calibration,
            calibration_count=args.calibration_count,
        )  # fmt: skip
        export_seconds = time.perf_counter() - start
        runtime = load_descriptor_model(info["path"]).model
        got = runtime(images)
    return runtime, row_cosines(reference, got), export_seconds


def _runtime_quantizations(runtime: str) -> tuple[str, ...]:
    """The `--quantize` modes an exported runtime has (its export module's QUANTIZATIONS)."""
    if runtime == "onnx":
        from sare_tf.artifacts.onnx_format import QUANTIZATIONS
    else:
        from sare_tf.artifacts.litert_format import QUANTIZATIONS
    return QUANTIZATIONS


def configurations(args) -> list[tuple[str, str, str]]:
    """`(runtime, precision or quantization, part)` of every measurement, in order."""
    rows = []
    for runtime in args.runtime:
        if runtime in ("tf", "torch"):
            rows += [(runtime, p, part) for p in args.precision for part in args.part]
        else:
            modes = _runtime_quantizations(runtime)
            rows += [(runtime, q, "full") for q in args.quantize if q in modes]
    return rows


def _ratios(results) -> None:
    """Adds each exported runtime's ratio to TF's full-model runs of the same report, and each TF
    run's ratio to PyTorch's run of the same part and precision."""
    tf_rates = {
        r["precision"]: r["images_per_second"]
        for r in results
        if r["runtime"] == "tf" and r["part"] == "full"
    }
    torch_rows = {(r["precision"], r["part"]): r for r in results if r["runtime"] == "torch"}
    for result in results:
        if result["runtime"] == "tf":
            torch_row = torch_rows.get((result["precision"], result["part"]))
            if torch_row:
                rate = result["images_per_second"] / torch_row["images_per_second"]
                result["ratio_to_torch"] = round(rate, 3)
                by_repeat = ratios_by_repeat(result["best_by_repeat"], torch_row["best_by_repeat"])
                if by_repeat:
                    result["ratio_to_torch_by_repeat"] = by_repeat
        elif result["runtime"] != "torch":
            for precision, rate in tf_rates.items():
                result[f"ratio_to_tf_{precision}"] = round(result["images_per_second"] / rate, 3)


def run(args: argparse.Namespace) -> int:
    if args.single:
        args.runtime, args.precision, args.part = args.runtime[0], args.precision[0], args.part[0]
        print(json.dumps(measure(args)))
        return 0

    report = report_header("extraction")
    rows = configurations(args)
    if not rows:
        raise ValueError("Nothing to measure: no --quantize mode of the chosen --runtime.")
    peak_policies = [p for r, p, _ in rows if r in ("tf", "torch")] + (
        ["float32"] if any(r not in ("tf", "torch") for r, _, _ in rows) else []
    )
    peaks = peak_for(args, list(dict.fromkeys(peak_policies)))
    print(
        f"{'runtime':8} {'backbone':10} {'part':9} {'precision':15} {'img/s':>8}   "
        f"image {args.height}x{args.width}, batch {args.batch_size}"
    )
    results, failed = _measure_rows(args, rows, peaks)
    _ratios(results)
    for line in _overhead_lines(args, results) + _result_lines(args, results):
        print(line)
    write_report(
        args.json,
        report,
        config={**{flag: getattr(args, flag) for flag in CHILD_FLAGS}, "repeats": args.repeats},
        peak=peaks,
        results=results,
        failed=failed,
    )
    return 0


def _measure_rows(args, rows, peaks) -> tuple[list[dict], list[dict]]:
    """Each row measured in a child process `--repeats` times, interleaved, read against the
    peak: `(results, failures)`; a result keeps its best round and each repeat's best."""
    by_row, failed, failed_rows = {}, [], set()
    for repeat in range(args.repeats):
        # The stage profile of the first repeat is enough.
        extra = ["--no-stages"] if repeat else []
        for row in rows:
            if row in failed_rows:
                continue
            runtime, precision, part = row
            flags = ["--single", "--runtime", runtime, "--precision", precision, "--part", part]
            label = f"{runtime:8} {args.backbone:10} {part:9} {precision:15}"
            try:
                result = run_child("extraction", flags + child_flags(args) + extra)
            except ChildProcessError as error:  # e.g. no bf16 convolution on this CPU: go on
                last = str(error).strip().splitlines()[-1]
                print(f"{label} failed: {last}")
                failed.append({"runtime": runtime, "precision": precision, "part": part,
                               "error": last})  # fmt: skip
                failed_rows.add(row)
                continue
            rate = result["images_per_second"]
            if row in by_row:
                _merge_repeat(by_row[row], result)
            else:
                by_row[row] = {**result, "best_by_repeat": [rate]}
            repeat_label = f"   (repeat {repeat + 1} of {args.repeats})" if args.repeats > 1 else ""
            print(f"{label} {rate:8.2f}{repeat_label}", flush=True)
    results = []
    for (runtime, precision, _), result in by_row.items():
        # Exported runtimes are read against the float32 roofline (no int8 peak is measured).
        policy = precision if runtime in ("tf", "torch") else "float32"
        result.update(
            efficiency(result["images_per_second"] * result["conv_flops_per_image"], policy, peaks)
        )
        results.append(result)
    return results, failed


def _merge_repeat(result: dict, repeat: dict) -> None:
    """Adds a later repeat's rounds to a row's result; its best round is the row's best."""
    result["rounds"] = result["rounds"] + repeat["rounds"]
    result["best_by_repeat"].append(repeat["images_per_second"])
    result["images_per_second"] = max(result["images_per_second"], repeat["images_per_second"])


def _overhead_lines(args, results) -> list[str]:
    """The aggregator's cost as the difference of TF's two separately timed parts."""
    lines = []
    for precision in args.precision:
        by_part = {
            r["part"]: r["images_per_second"]
            for r in results
            if r["runtime"] == "tf" and r["precision"] == precision
        }
        if {"backbone", "full"} <= by_part.keys():
            overhead = by_part["backbone"] / by_part["full"] - 1
            lines.append(
                f"NetVLAD + normalisation overhead under {precision}: {100 * overhead:+.1f}% of "
                "the backbone time (two separate runs; the stage profile below times the head "
                "directly)"
            )
    gflop = results[0]["conv_flops_per_image"] / 1e9 if results else 0.0
    lines.append(f"convolutions: {gflop:.4g} GFLOP per {args.height}x{args.width} image (2 x MACs)")
    return lines


def _result_lines(args, results) -> list[str]:
    """Per result: its share of the peak, its ratios to the other runtimes, its stage profile."""
    lines = []
    for result in results:
        rate = f"{result['images_per_second']:.2f} img/s"
        label = f"{result['runtime']} {result['precision']} {result['part']}"
        lines.append(describe_efficiency(label, rate, result))
        ratios = [
            f"{result[key]:.2f}x TF {key.removeprefix('ratio_to_tf_')}"
            for key in sorted(result)
            if key.startswith("ratio_to_tf_")
        ]
        if "ratio_to_torch" in result:
            ratios.append(f"{result['ratio_to_torch']:.2f}x PyTorch (same part and precision)")
        if "ratio_to_torch_by_repeat" in result:
            ratios.append(describe_ratios_by_repeat(result["ratio_to_torch_by_repeat"]))
        if "cosine_to_float32" in result:
            cosine = result["cosine_to_float32"]
            ratios.append(f"descriptor cosine to Keras float32 min {cosine['min']:.5f}")
        if ratios:
            lines.append("    " + ", ".join(ratios))
        if "stage_profile" in result:
            lines += describe_profile(result["stage_profile"])
    return lines
