"""`sare-tf check-data DATASET`: find bad image files and dataset problems before training."""

from __future__ import annotations

import argparse

HELP = "Check a dataset (.mat / .csv / folder): schema, counts, ground truth, every image file."
DESCRIPTION = (
    "Loads DATASET with the reader its extension picks (a dbStruct .mat file, a CSV file of "
    "path,utm_east,utm_north[,split] or with named columns (metres or lat/lon degrees), or a folder with database/ and queries/ subfolders of "
    "@utm_east@utm_north@...@.jpg files), prints its counts, the queries without any "
    "database image within the training radius and the ground-truth statistics that reveal "
    "wrong units (queries with / without positives, positives per query, database spacing "
    "and extent, the UTM zone chosen for latitude/longitude input), then decodes every image as training will and "
    "lists the unusable files (missing, empty, truncated, not an image, too large) with the "
    "reason. Exit status 0 when every file is usable, 1 otherwise. Training skips and counts "
    "bad files by default; check first so they are found now rather than mid-run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help=".mat, .csv or folder")
    parser.add_argument(
        "--image-root",
        default=None,
        help="folder the dataset's image paths are relative to (default: the dataset's folder)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="images with more pixels are reported as bad (default 60 000 000)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decoding threads (default: CPU count)"
    )
    parser.add_argument(
        "--skip-images",
        action="store_true",
        help="check the dataset file and ground truth only, not the images",
    )


def run(args: argparse.Namespace) -> int:
    from sare_tf.data.checks import check_dataset
    from sare_tf.data.geo_dataset import GeoDataset
    from sare_tf.data.images import DEFAULT_MAX_PIXELS
    from sare_tf.data.statistics import describe_ground_truth, ground_truth_statistics

    dataset = GeoDataset.load(args.dataset, image_root=args.image_root)
    print(dataset.summary())
    for line in describe_ground_truth(ground_truth_statistics(dataset)):
        print(line)
    if args.skip_images:
        return 0
    report = check_dataset(
        dataset,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        num_workers=args.workers,
        progress=True,
    )
    print(report.summary())
    if not report.ok:
        print(
            f"{len(report.bad)} unusable image file(s): training would skip the tuples that "
            "need them (policy 'skip') or stop (policy 'error'). Fix or remove them."
        )
        return 1
    return 0
