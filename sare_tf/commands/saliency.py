"""`sare-tf saliency`: heat maps of why queries match their top retrieved database image."""

from __future__ import annotations

import argparse
import os

HELP = "Write saliency panels (query, heat map, top-1 database image, its heat map) as PNG files."
DESCRIPTION = """\
For each chosen query, retrieves the most similar database image and draws one PNG panel: the
query, a heat map of the regions that make its descriptor similar to that image's descriptor,
the top-1 database image framed green when it lies within the dataset's positive radius (25 m)
of the query and red otherwise, and the heat map of the database image against the query.
With --compare-model a second row shows another model on the same queries (as the SARE paper's
Fig. 7 sets SARE beside NetVLAD). Also writes panels.json with the retrievals.

Methods (tf-keras-vis): gradcam++ (default) and scorecam on the last backbone convolution
(or --layer), saliency (vanilla gradients) and smoothgrad on the input pixels. .keras models
support all four; SavedModels (which expose only image -> descriptor) support saliency and
smoothgrad. Models built under mixed precision are explained in float32.
"""


def _query_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected query ids like 0,5,12; got {text!r}") from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help=".keras file or SavedModel folder (a TF Serving root uses its newest version)",
    )
    parser.add_argument(
        "--compare-model",
        default=None,
        metavar="PATH",
        help="a second model drawn in a second row of every panel (e.g. a NetVLAD baseline)",
    )
    parser.add_argument("--model-name", default=None, help="row label (default: file name)")
    parser.add_argument(
        "--compare-name", default=None, help="second row label (default: file name)"
    )
    parser.add_argument(
        "--dataset", required=True, metavar="MAT", help=".mat dbStruct, .csv or dataset folder"
    )
    parser.add_argument(
        "--image-root", default=None, help="folder the dataset's image paths are relative to"
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=None,
        help="resize every image to H x W (default: the model's fixed size, else the first "
        "query's size)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--queries",
        type=_query_ids,
        default=None,
        metavar="IDS",
        help="query ids, comma separated, e.g. 0,5,12",
    )
    chosen.add_argument(
        "--random",
        type=int,
        default=None,
        metavar="K",
        help="K random queries (default: 8 random queries)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    parser.add_argument(
        "--method",
        default="gradcam++",
        choices=("gradcam++", "scorecam", "saliency", "smoothgrad"),
        help="saliency method (default: %(default)s)",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="target layer of gradcam++ / scorecam (default: the layer feeding NetVLAD, "
        "block5_conv3 for VGG16)",
    )
    parser.add_argument(
        "--smooth-samples", type=int, default=20, help="smoothgrad noise samples (default 20)"
    )
    parser.add_argument(
        "--scorecam-channels",
        type=int,
        default=None,
        help="Faster Score-CAM: only the K highest-variance channels (default: all)",
    )
    parser.add_argument(
        "--scorecam-temperature",
        type=float,
        default=0.1,
        help="T of the Score-CAM mask weights sigmoid((s_mask - s) / T) (default 0.1)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNGs")


def _model_label(path: str) -> str:
    path = os.path.normpath(path)
    base = os.path.basename(path)
    if base.endswith((".keras", ".h5")):
        return os.path.splitext(base)[0]
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{base}" if base.isdigit() and parent else base


def choose_queries(num_queries: int, queries=None, random_count=None, seed: int = 0) -> list[int]:
    """The query ids to draw: the given ones, or `random_count` (default 8) random distinct ones."""
    import numpy as np

    if queries is not None:
        return list(queries)
    count = 8 if random_count is None else random_count
    if count < 1:
        raise ValueError(f"--random must be at least 1. Received: --random {count}")
    count = min(count, num_queries)
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_queries, size=count, replace=False))


def run(args) -> int:
    from sare_tf.data import GeoDataset
    from sare_tf.saliency import load_model, write_panels

    dataset = GeoDataset.load(args.dataset, image_root=args.image_root)
    if dataset.num_queries == 0:
        raise ValueError(f"Dataset {args.dataset!r} has no queries.")
    query_ids = choose_queries(dataset.num_queries, args.queries, args.random, args.seed)
    model = load_model(args.model)
    compare = load_model(args.compare_model) if args.compare_model else None
    print(
        f"saliency: {args.method} on {len(query_ids)} queries of {dataset.name} "
        f"({dataset.num_db} database images)"
    )
    panels = write_panels(
        model,
        dataset,
        query_ids,
        args.out,
        image_size=args.image_size,
        method=args.method,
        layer_name=args.layer,
        model_name=args.model_name or _model_label(args.model),
        compare_model=compare,
        compare_name=args.compare_name
        or (_model_label(args.compare_model) if args.compare_model else "compare"),
        batch_size=args.batch_size,
        smooth_samples=args.smooth_samples,
        scorecam_max_channels=args.scorecam_channels,
        scorecam_temperature=args.scorecam_temperature,
    )
    for panel in panels:
        retrievals = "; ".join(
            f"{row.model_name}: top-1 db {row.top1_db_id} at {row.distance_m:.1f} m "
            f"({'correct' if row.correct else 'wrong'})"
            for row in panel.rows
        )
        print(f"query {panel.query_id}: {retrievals} -> {panel.path}")
    print(f"wrote {len(panels)} panels and panels.json to {args.out}")
    return 0
