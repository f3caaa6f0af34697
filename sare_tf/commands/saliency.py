"""`sare-tf saliency`: heat maps of why queries match their top retrieved database image."""

from __future__ import annotations

import argparse
import os

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.saliency.settings import SaliencySettings

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of `SaliencySettings`."""
    add_config_arguments(parser, SaliencySettings)


def _model_label(path: str) -> str:
    path = os.path.normpath(path)
    base = os.path.basename(path)
    if base.endswith((".keras", ".h5")):
        return os.path.splitext(base)[0]
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{base}" if base.isdigit() and parent else base


def run(args) -> int:
    settings = config_from_args(SaliencySettings, args)  # contradicting flags fail here, early
    from sare_tf.data import GeoDataset
    from sare_tf.saliency import load_model, write_panels

    dataset = GeoDataset.load(settings.dataset, image_root=settings.image_root)
    if dataset.num_queries == 0:
        raise ValueError(f"Dataset {settings.dataset!r} has no queries.")
    query_ids = settings.query_ids(dataset.num_queries)
    model = load_model(settings.model)
    compare = load_model(settings.compare_model) if settings.compare_model else None
    print(
        f"saliency: {settings.method} on {len(query_ids)} queries of {dataset.name} "
        f"({dataset.num_db} database images)"
    )
    panels = write_panels(
        model,
        dataset,
        query_ids,
        settings.out,
        image_size=settings.image_size,
        method=settings.method,
        layer_name=settings.layer,
        model_name=settings.model_name or _model_label(settings.model),
        compare_model=compare,
        compare_name=settings.compare_name
        or (_model_label(settings.compare_model) if settings.compare_model else "compare"),
        batch_size=settings.batch_size,
        smooth_samples=settings.smooth_samples,
        scorecam_max_channels=settings.scorecam_channels,
        scorecam_temperature=settings.scorecam_temperature,
    )
    for panel in panels:
        retrievals = "; ".join(
            f"{row.model_name}: top-1 db {row.top1_db_id} at {row.distance_m:.1f} m "
            f"({'correct' if row.correct else 'wrong'})"
            for row in panel.rows
        )
        print(f"query {panel.query_id}: {retrievals} -> {panel.path}")
    print(f"wrote {len(panels)} panels and panels.json to {settings.out}")
    return 0
