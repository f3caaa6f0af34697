"""`sare-tf make-synthetic OUT`: write the synthetic city (JPEG images + dbStruct .mat files)."""

from __future__ import annotations

import argparse

HELP = "Generate the synthetic city dataset (JPEG images + Pittsburgh-style .mat files)."
DESCRIPTION = (
    "Generates a seeded, deterministic place-recognition dataset: streets of procedural facades, "
    "database images every few metres along them, and queries at other positions and times "
    "(lighting, weather, occluders, viewpoint). Writes OUT/images/<split>/... and "
    "OUT/synthcity_{train,val,test}.mat (image root OUT), readable by every command that takes "
    "a dataset. A city with the same settings already in OUT is reused unless --force."
)


def _image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH, e.g. 120x160; got {text!r}"
        ) from error
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (becomes the image root)")
    parser.add_argument(
        "--preset",
        choices=("tiny", "demo"),
        default="demo",
        help="tiny: a few hundred 60x80 images for tests; demo: ~1600 120x160 images (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="city seed (default 0)")
    parser.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="HxW",
        help="override the preset's image size, e.g. 480x640",
    )
    parser.add_argument(
        "--streets",
        type=int,
        nargs=3,
        default=None,
        metavar=("TRAIN", "VAL", "TEST"),
        help="override the number of streets per split",
    )
    parser.add_argument(
        "--queries-per-street",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="override queries per street: one number, or three (train val test)",
    )
    parser.add_argument(
        "--appearance-change",
        type=float,
        default=None,
        help="0 (queries lit like the database) .. 1 (full day/weather changes, default)",
    )
    parser.add_argument(
        "--layout",
        choices=("dbstruct", "msls", "gsv-cities"),
        default="dbstruct",
        help="also write the city in another dataset's layout: msls (OUT/msls: train as "
        "trondheim, val as cph, test as sf) or gsv-cities (OUT/gsv_cities: the train split as "
        "places of 10 m); the .mat files are always written (default: dbstruct only)",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if present")


def run(args: argparse.Namespace) -> int:
    from sare_tf.synthetic.city import make_synthetic_city

    overrides = {}
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    if args.streets is not None:
        overrides["streets"] = tuple(args.streets)
    if args.queries_per_street is not None:
        counts = args.queries_per_street
        if len(counts) not in (1, 3):
            raise ValueError(f"--queries-per-street takes one number or three. Received: {counts}")
        overrides["queries_per_street"] = counts[0] if len(counts) == 1 else tuple(counts)
    if args.appearance_change is not None:
        overrides["appearance_change"] = args.appearance_change
    mats = make_synthetic_city(
        args.out, preset=args.preset, seed=args.seed, force=args.force, progress=True, **overrides
    )
    for split, path in mats.items():
        print(f"{split}: {path}")
    if args.layout != "dbstruct":
        import os

        from sare_tf.data import GeoDataset
        from sare_tf.synthetic.layouts import write_gsv_cities_layout, write_msls_layout

        datasets = {split: GeoDataset.load(path) for split, path in mats.items()}
        if args.layout == "msls":
            root = write_msls_layout(datasets, os.path.join(args.out, "msls"))
            print(f"MSLS layout: {root} (train: {root}:trondheim, val: {root}:cph)")
        else:
            root = write_gsv_cities_layout(datasets["train"], os.path.join(args.out, "gsv_cities"))
            print(f"GSV-Cities layout: {root}")
    return 0
