"""Descriptor extraction throughput: VGG16 + NetVLAD vs the bare cropped backbone.

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

Usage:
    sare-tf bench extraction                      # 480x640, float32 and mixed_bfloat16, + peak
    sare-tf bench extraction --precision mixed_bfloat16 --part full
    sare-tf bench extraction --precision mixed_bfloat16 --batch-size 8 --rounds 2
    sare-tf bench extraction --height 240 --width 320 --json runs/bench/extraction.json
    sare-tf bench extraction --peak-json runs/bench/peak.json   # reuse a measured peak
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sare_tf.bench.common import add_json_argument, report_header, run_child, write_report
from sare_tf.bench.peak import add_peak_arguments, describe_efficiency, efficiency, peak_for

HELP = "Descriptor extraction img/s (VGG16 + NetVLAD vs bare backbone) and its share of the peak."
DESCRIPTION = __doc__

# Flags passed unchanged to every child process.
CHILD_FLAGS = (
    "backbone",
    "num_clusters",
    "height",
    "width",
    "batch_size",
    "batches",
    "rounds",
    "warmup",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone", default="vgg16", help="backbone registry name (default vgg16)"
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
    add_peak_arguments(parser)
    add_json_argument(parser, "extraction")
    parser.add_argument(
        "--single", action="store_true", help=argparse.SUPPRESS
    )  # child-process mode


def measure(args: argparse.Namespace) -> dict:
    """Runs one configuration in this process and returns its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from sare_tf.bench.flops import model_conv_flops
    from sare_tf.models import build_embedding_model, feature_model

    keras.config.set_dtype_policy(args.precision)
    model = build_embedding_model(
        args.backbone, num_clusters=args.num_clusters, input_shape=(args.height, args.width, 3)
    )
    if args.part == "backbone":
        model = feature_model(model)
    forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
    images = tf.constant(
        np.random.default_rng(0).uniform(0, 255, (args.batch_size, args.height, args.width, 3)),
        tf.float32,
    )
    for _ in range(args.warmup):
        forward(images).numpy()
    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.batches):
            forward(images).numpy()
        rounds.append(args.batches * args.batch_size / (time.perf_counter() - start))
    return {
        "backbone": args.backbone,
        "part": args.part,
        "precision": args.precision,
        "image_size": [args.height, args.width],
        "batch_size": args.batch_size,
        "images_per_second": max(rounds),
        "rounds": rounds,
        "conv_flops_per_image": sum(c.flops for c in model_conv_flops(model)),
    }


def run(args: argparse.Namespace) -> int:
    if args.single:
        args.precision, args.part = args.precision[0], args.part[0]
        print(json.dumps(measure(args)))
        return 0

    report = report_header("extraction")
    peaks = peak_for(args, args.precision)
    results = []
    print(
        f"{'backbone':10} {'part':9} {'precision':15} {'img/s':>8}   image {args.height}x{args.width}, batch {args.batch_size}"
    )
    for precision in args.precision:
        for part in args.part:
            flags = ["--single", "--precision", precision, "--part", part]
            for flag in CHILD_FLAGS:
                flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            result = run_child("extraction", flags)
            result.update(
                efficiency(
                    result["images_per_second"] * result["conv_flops_per_image"], precision, peaks
                )
            )
            results.append(result)
            print(
                f"{result['backbone']:10} {part:9} {precision:15} {result['images_per_second']:8.2f}",
                flush=True,
            )
    for precision in args.precision:
        by_part = {
            r["part"]: r["images_per_second"] for r in results if r["precision"] == precision
        }
        if {"backbone", "full"} <= by_part.keys():
            overhead = by_part["backbone"] / by_part["full"] - 1
            print(
                f"NetVLAD + normalisation overhead under {precision}: {100 * overhead:+.1f}% of the backbone time"
            )
    gflop = results[0]["conv_flops_per_image"] / 1e9 if results else 0.0
    print(f"convolutions: {gflop:.4g} GFLOP per {args.height}x{args.width} image (2 x MACs)")
    for result in results:
        rate = f"{result['images_per_second']:.2f} img/s"
        print(describe_efficiency(f"{result['precision']} {result['part']}", rate, result))
    report.update(
        config={flag: getattr(args, flag) for flag in CHILD_FLAGS},
        peak=peaks,
        results=results,
    )
    write_report(args.json, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    from sare_tf.bench.common import standalone_main

    return standalone_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
