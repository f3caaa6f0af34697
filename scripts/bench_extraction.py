"""Descriptor extraction throughput: VGG16 + NetVLAD vs the bare cropped backbone.

Usage:
    python scripts/bench_extraction.py                      # 480x640, float32 and mixed_bfloat16
    python scripts/bench_extraction.py --precision mixed_bfloat16 --batch-size 8 --rounds 2
    python scripts/bench_extraction.py --height 240 --width 320 --out runs/bench/extraction.json

Each configuration runs in a fresh subprocess (the dtype policy is global and oneDNN caches
kernels per process): build the model with random weights (no download), warm up, then time
`--rounds` rounds of `--batches` batches and keep the best round, as the design's reference
figures were taken. Inputs are random pixels already in memory, so this measures the model,
not JPEG decoding (see scripts/bench_pipeline.py for that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def measure(args) -> dict:
    """Runs one configuration in this process and returns its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

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
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument("--out", default="runs/bench/extraction.json", help="JSON results path")
    parser.add_argument(
        "--single", action="store_true", help=argparse.SUPPRESS
    )  # child-process mode
    args = parser.parse_args(argv)

    if args.single:
        args.precision, args.part = args.precision[0], args.part[0]
        print(json.dumps(measure(args)))
        return 0

    results = []
    print(
        f"{'backbone':10} {'part':9} {'precision':15} {'img/s':>8}   image {args.height}x{args.width}, batch {args.batch_size}"
    )
    for precision in args.precision:
        for part in args.part:
            command = [
                sys.executable,
                __file__,
                "--single",
                "--precision",
                precision,
                "--part",
                part,
            ]
            for flag in (
                "backbone",
                "num_clusters",
                "height",
                "width",
                "batch_size",
                "batches",
                "rounds",
                "warmup",
            ):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                print(completed.stderr, file=sys.stderr)
                return completed.returncode
            result = json.loads(completed.stdout.strip().splitlines()[-1])
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
