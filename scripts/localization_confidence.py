"""How well `sare-tf localize`'s confidence separates right from wrong answers on a dataset.

Usage:
    python scripts/localization_confidence.py --model saved_models/sare_demo \
        --dataset data/synthetic_city/demo/synthcity_test.mat --out runs/localize_confidence

Builds a place index of the dataset's database images (or reuses OUT/index), localizes every
query, and prints (and writes OUT/confidence.json) the accuracy of the consensus and top-1
positions and the precision / recall of answers accepted at each confidence threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help=".keras file, SavedModel or TF Serving base path"
    )
    parser.add_argument("--dataset", required=True, help="dataset whose queries are localized")
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--top-k", type=int, default=10, help="matches per query (default 10)")
    parser.add_argument("--radius", type=float, default=25.0, help="correct within (m, default 25)")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3],
        help="confidence thresholds to report (default 0 0.02 0.05 0.1 0.15 0.2 0.3)",
    )
    parser.add_argument("--out", default="runs/localize_confidence", help="output folder")
    args = parser.parse_args(argv)

    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.data import GeoDataset
    from sare_tf.index.localize import confidence_report, localize_photos
    from sare_tf.index.store import PlaceIndex

    dataset = GeoDataset.load(args.dataset, image_root=args.image_root)
    index_dir = os.path.join(args.out, "index")
    if not os.path.exists(os.path.join(index_dir, "manifest.json")):
        PlaceIndex.build(
            load_descriptor_model(args.model),
            dataset.db_image_paths(),
            dataset.db_utm,
            index_dir,
            frame=dataset.frame,
        )
    answers = localize_photos(
        index_dir, dataset.query_image_paths(), model=args.model, k=args.top_k, radius_m=args.radius
    )
    report = confidence_report(answers, dataset.query_utm, args.radius, tuple(args.thresholds))
    print(
        f"{report['num_queries']} queries: consensus right {100 * report['accuracy']:.1f} %, "
        f"top-1 right {100 * report['top1_accuracy']:.1f} %"
    )
    print(f"{'confidence >=':>14} {'accepted':>9} {'precision':>10} {'recall':>7}")
    for row in report["rows"]:
        precision = "-" if row["precision"] is None else f"{100 * row['precision']:.1f}"
        print(
            f"{row['threshold']:>14.2f} {100 * row['accepted']:>8.1f}% {precision:>10} {100 * row['recall']:>6.1f}%"
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "confidence.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
