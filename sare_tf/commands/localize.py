"""`sare-tf localize --index DIR PHOTO...`: where was each photo taken?"""

from __future__ import annotations

import argparse
import json

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.index.settings import LocalizeSettings

HELP = "estimate where photos were taken from a place index (JSON lines, optional HTML report)"
DESCRIPTION = """\
Encodes each photo (EXIF orientation applied) with the index's model, searches the place index
and prints one JSON line per photo: the top-K database matches (path, similarity, distance,
position), the top-1 position, the answer's position (the similarity-weighted mean of the best
match and of those among the 10 best within --radius metres of it) and a confidence in [0, 1]
(1 - d_in / d_out: d_in the distance of the best match, d_out that of the best match farther
than --radius from it; both as printed). Positions are in the index's metres and, where the database
was given in latitude / longitude, also in degrees (position_latlon, latlon). PHOTO may be a
file, a folder of images or a quoted glob pattern; every photo is checked before the model
loads, and each failure says why. --dataset marks each answer right or wrong (within --radius)
for photos that are queries of that dataset. --report writes an HTML page."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The photos, then one flag per field of `LocalizeSettings`."""
    parser.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="image files, folders of images or glob patterns"
    )
    add_config_arguments(parser, LocalizeSettings)


def run(args: argparse.Namespace) -> int:
    import sys

    from sare_tf.index.localize import localize_photos, query_truth
    from sare_tf.index.report import write_report
    from sare_tf.index.store import PlaceIndex

    settings = config_from_args(LocalizeSettings, args)
    truth = None
    if settings.dataset:
        from sare_tf.data import GeoDataset

        truth = query_truth(GeoDataset.load(settings.dataset, image_root=settings.image_root))
    index = PlaceIndex.load(settings.index)  # once: answers and hloc's files read the same index
    descriptors = {} if settings.hloc_out else None
    answers = localize_photos(
        index, args.photos, model=settings.model, k=settings.top_k, radius_m=settings.radius,
        batch_size=settings.batch_size, runtime=settings.runtime, truth=truth,
        descriptors_out=descriptors,
    )  # fmt: skip
    for answer in answers:
        print(json.dumps(answer))
    if settings.hloc_out:
        _write_hloc(settings, index, answers, descriptors)
    if settings.report:
        path = write_report(answers, settings.report, radius_m=settings.radius)
        print(f"Wrote {path}", file=sys.stderr)
    return 0 if all(a.get("error") is None for a in answers) else 1


def _write_hloc(settings, index, answers, descriptors) -> None:
    import os
    import sys

    import numpy as np

    from sare_tf.index.hloc_files import relative_names, write_global_descriptors, write_pairs

    localized = [a for a in answers if a.get("error") is None and a["matches"]]
    photos = [a["photo"] for a in localized]
    image_dir = settings.hloc_image_dir or os.path.commonpath(
        [os.path.dirname(os.path.abspath(p)) for p in photos + index.paths]
    )
    photo_names = relative_names(photos, image_dir)
    db_names = relative_names(index.paths, image_dir)
    pairs = [(name, db_names[m["db_id"]]) for name, a in zip(photo_names, localized, strict=True)
             for m in a["matches"]]  # fmt: skip
    pairs_path = write_pairs(os.path.join(settings.hloc_out, "pairs-from-retrieval.txt"), pairs)
    features = os.path.join(settings.hloc_out, "global-feats.h5")
    if os.path.exists(features):
        os.remove(features)
    write_global_descriptors(features, db_names, index.descriptors())
    write_global_descriptors(features, photo_names, np.stack([descriptors[p] for p in photos]))
    print(f"Wrote {pairs_path} and {features} (names relative to {image_dir})", file=sys.stderr)
