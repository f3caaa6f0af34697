"""Recall@N and descriptor cosines of every ONNX / LiteRT export of a model against Keras float32.

Usage:
    python scripts/compare_runtimes.py --model runs/demo/best.keras \
        --dataset data/synthetic_city/demo/synthcity_test.mat \
        --calibration data/synthetic_city/demo/synthcity_train.mat [--out runs/runtimes]

Exports the model as ONNX (float, int8) and LiteRT (float, dynamic, int8; int8 calibrated on
`--calibration-count` seeded database images of `--calibration`), encodes the test split's
database and queries with each, and writes OUT/runtimes.md and OUT/runtimes.json: Recall@1/5/10,
its change against the Keras model in points, and the cosine distribution to the Keras
descriptors (`sare_tf.evaluation.quantization`). Throughput is `sare-tf bench extraction
--runtime tf onnx litert`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    from sare_tf.data import GeoDataset
    from sare_tf.evaluation.quantization import markdown_table, runtime_comparison

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the .keras model")
    parser.add_argument("--dataset", required=True, help="the split to evaluate on")
    parser.add_argument("--calibration", required=True, help="dataset whose db calibrates int8")
    parser.add_argument("--calibration-count", type=int, default=200)
    parser.add_argument("--out", default="runs/runtimes", help="output folder")
    args = parser.parse_args(argv)
    calibration = GeoDataset.load(args.calibration).db_image_paths()
    report = runtime_comparison(
        args.model, GeoDataset.load(args.dataset), calibration, args.out,
        calibration_count=args.calibration_count,
    )  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "runtimes.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    table = markdown_table(report)
    with open(os.path.join(args.out, "runtimes.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
