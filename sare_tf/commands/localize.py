"""`sare-tf localize --index DIR PHOTO...`: where was each photo taken?"""

from __future__ import annotations

import argparse
import json

from sare_tf.commands._runtime_flag import add_runtime_argument

HELP = "estimate where photos were taken from a place index (JSON lines, optional HTML report)"
DESCRIPTION = """\
Encodes each photo (EXIF orientation applied) with the index's model, searches the place index
and prints one JSON line per photo: the top-K database matches (path, similarity, distance,
position), the top-1 position, a consensus position (the densest group of positions among the
10 best matches within --radius metres, similarity-weighted) and a confidence in [0, 1]
(1 - d_in / d_out: d_in the distance of the best match in that group, d_out that of the best
match elsewhere; both as printed). Positions are in the index's metres and, where the database
was given in latitude / longitude, also in degrees (position_latlon, latlon). PHOTO may be a
file, a folder of images or a quoted glob pattern; every photo is checked before the model
loads, and each failure says why. --dataset marks each answer right or wrong (within --radius)
for photos that are queries of that dataset. --report writes an HTML page."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="image files, folders of images or glob patterns"
    )
    parser.add_argument("--index", required=True, help="the place index folder")
    parser.add_argument(
        "--model", default=None, help="the model (default: the one the index was built with)"
    )
    add_runtime_argument(parser)
    parser.add_argument(
        "--top-k",
        type=int,
        default=10,
        help="matches per photo, at most the index's size (default 10)",
    )
    parser.add_argument(
        "--radius", type=float, default=25.0, help="consensus radius in metres (default 25)"
    )
    parser.add_argument(
        "--dataset", default=None,
        help="a dataset whose queries include the photos: answers are marked right or wrong",
    )  # fmt: skip
    parser.add_argument(
        "--image-root", default=None, help="folder --dataset's paths are relative to"
    )
    parser.add_argument("--report", default=None, help="also write this HTML report")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")


def run(args: argparse.Namespace) -> int:
    import sys

    from sare_tf.localization import localize_photos, query_truth
    from sare_tf.localize_report import write_report

    truth = None
    if args.dataset:
        from sare_tf.data import GeoDataset

        truth = query_truth(GeoDataset.load(args.dataset, image_root=args.image_root))
    answers = localize_photos(
        args.index, args.photos, model=args.model, k=args.top_k, radius_m=args.radius,
        batch_size=args.batch_size, runtime=args.runtime, truth=truth,
    )  # fmt: skip
    for answer in answers:
        print(json.dumps(answer))
    if args.report:
        path = write_report(answers, args.report, radius_m=args.radius)
        print(f"Wrote {path}", file=sys.stderr)
    return 0 if all(a.get("error") is None for a in answers) else 1
