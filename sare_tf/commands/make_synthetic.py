"""`sare-tf make-synthetic OUT`: write the synthetic city (JPEG images + dbStruct .mat files)."""

from __future__ import annotations

import argparse

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.synthetic.settings import SyntheticCitySettings

HELP = "Generate the synthetic city dataset (JPEG images + Pittsburgh-style .mat files)."
DESCRIPTION = (
    "Generates a seeded, deterministic place-recognition dataset: streets of procedural facades, "
    "database images every few metres along them, and queries at other positions and times "
    "(lighting, weather, occluders, viewpoint). Writes OUT/images/<split>/... and "
    "OUT/synthcity_{train,val,test}.mat (image root OUT), readable by every command that takes "
    "a dataset. A city with the same settings already in OUT is reused unless --force."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per field of `SyntheticCitySettings`."""
    add_config_arguments(parser, SyntheticCitySettings)


def run(args: argparse.Namespace) -> int:
    from sare_tf.synthetic.city import make_synthetic_city

    settings = config_from_args(SyntheticCitySettings, args)
    mats = make_synthetic_city(
        settings.out, preset=settings.preset, seed=settings.seed, force=settings.force,
        progress=True, **settings.overrides(),
    )  # fmt: skip
    for split, path in mats.items():
        print(f"{split}: {path}")
    if settings.layout != "dbstruct":
        import os

        from sare_tf.data import GeoDataset
        from sare_tf.synthetic.layouts import write_gsv_cities_layout, write_msls_layout

        datasets = {split: GeoDataset.load(path) for split, path in mats.items()}
        if settings.layout == "msls":
            root = write_msls_layout(datasets, os.path.join(settings.out, "msls"))
            print(f"MSLS layout: {root} (train: {root}:trondheim, val: {root}:cph)")
        else:
            root = write_gsv_cities_layout(
                datasets["train"], os.path.join(settings.out, "gsv_cities")
            )
            print(f"GSV-Cities layout: {root}")
    return 0
