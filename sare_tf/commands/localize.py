"""`sare-tf localize --index DIR PHOTO...`: where was each photo taken?"""

from __future__ import annotations

import argparse
import json

HELP = "estimate where photos were taken from a place index (JSON lines, optional HTML report)"
DESCRIPTION = """\
Encodes each photo (EXIF orientation applied) with the index's model, searches the place index
and prints one JSON line per photo: the top-K database matches (path, similarity, distance,
position), the top-1 position, a consensus position (the densest group of match positions
within --radius metres, similarity-weighted) and a confidence in [0, 1] (a ratio test between
the best match of that group and the best match elsewhere). --report writes an HTML page with
each photo beside its matches and a small map of their positions."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="image files")
    parser.add_argument("--index", required=True, help="the place index folder")
    parser.add_argument(
        "--model", default=None, help="the model (default: the one the index was built with)"
    )
    parser.add_argument("--top-k", type=int, default=10, help="matches per photo (default 10)")
    parser.add_argument(
        "--radius", type=float, default=25.0, help="consensus radius in metres (default 25)"
    )
    parser.add_argument("--report", default=None, help="also write this HTML report")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")


def run(args: argparse.Namespace) -> int:
    import sys

    from sare_tf.localization import localize_photos, write_report

    answers = localize_photos(
        args.index, args.photos, model=args.model, k=args.top_k, radius_m=args.radius,
        batch_size=args.batch_size,
    )  # fmt: skip
    for answer in answers:
        print(json.dumps(answer))
    if args.report:
        path = write_report(answers, args.report)
        print(f"Wrote {path}", file=sys.stderr)
    return 0 if all(a.get("error") is None for a in answers) else 1
