"""`SaliencySettings`: which panels `sare-tf saliency` draws, one field per flag of the command.

Pure Python (neither TensorFlow nor tf-keras-vis), so that the command builds its flags from it
at start-up (`sare_tf.config_options`); also the names of the saliency methods.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from sare_tf.config_options import (
    batch_size_option,
    dataset_option,
    image_root_option,
    image_size_option,
    model_option,
    option,
    out_option,
)

GRADIENT_METHODS = ("saliency", "smoothgrad")
CAM_METHODS = ("gradcam++", "scorecam")
METHODS = CAM_METHODS + GRADIENT_METHODS
DEFAULT_RANDOM_QUERIES = 8


def query_id_list(text: str) -> list[int]:
    """`"0,5,12"` (or `"0 5 12"`) -> `[0, 5, 12]`, the `--queries` flag."""
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected query ids like 0,5,12; got {text!r}") from error


def choose_queries(num_queries: int, queries=None, random_count=None, seed: int = 0) -> list[int]:
    """The query ids to draw: the given ones, or `random_count` (default 8) random distinct ones."""
    if queries is not None:
        return list(queries)
    count = DEFAULT_RANDOM_QUERIES if random_count is None else random_count
    if count < 1:
        raise ValueError(f"--random must be at least 1. Received: --random {count}")
    count = min(count, num_queries)
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_queries, size=count, replace=False))


@dataclasses.dataclass(frozen=True)
class SaliencySettings:
    """What is explained and drawn (each field is a flag of `sare-tf saliency`).

    Attributes:
        model, model_name: the model and its row label (None: its file name).
        compare_model, compare_name: a second model drawn in a second row, and its label.
        dataset, image_root: the dataset whose queries and database are used.
        image_size: images resized to it (None: the model's fixed size, else the first query's).
        queries, random, seed: the query ids, or this many random ones (default 8) drawn with
            the seed.
        method, layer: the tf-keras-vis method and the layer of the CAM methods.
        smooth_samples, scorecam_channels, scorecam_temperature: the methods' own settings.
        batch_size: images per batch; out: the folder of the PNG panels.
    """

    model: str | None = model_option(
        ".keras file or SavedModel folder (a TF Serving root uses its newest version)"
    )
    model_name: str | None = option(None, "row label (default: file name)", group="model")
    compare_model: str | None = option(
        None, "a second model drawn in a second row of every panel (e.g. a NetVLAD baseline)",
        group="model", metavar="PATH",
    )  # fmt: skip
    compare_name: str | None = option(None, "second row label (default: file name)", group="model")
    image_size: tuple[int, int] | None = image_size_option(
        "resize every image to H x W (default: the model's fixed size, else the first query's size)"
    )
    batch_size: int = batch_size_option(8, "images per batch")
    dataset: str | None = dataset_option(".mat dbStruct, .csv or dataset folder")
    image_root: str | None = image_root_option()
    queries: tuple[int, ...] | None = option(
        None, "query ids, comma separated, e.g. 0,5,12", group="queries", metavar="IDS",
        type=query_id_list,
    )  # fmt: skip
    random: int | None = option(
        None, f"K random queries (default: {DEFAULT_RANDOM_QUERIES} random queries)",
        group="queries", metavar="K",
    )  # fmt: skip
    seed: int = option(0, "seed of --random", group="queries")
    method: str = option("gradcam++", "saliency method", group="method", choices=METHODS)
    layer: str | None = option(
        None, "target layer of gradcam++ / scorecam (default: the layer feeding the "
        "aggregator, block5_conv3 for VGG16)", group="method",
    )  # fmt: skip
    smooth_samples: int = option(20, "smoothgrad noise samples", group="method")
    scorecam_channels: int | None = option(
        None, "Faster Score-CAM: only the K highest-variance channels (default: all)",
        group="method", metavar="K",
    )  # fmt: skip
    scorecam_temperature: float = option(
        0.1, "T of the Score-CAM mask weights sigmoid((s_mask - s) / T)", group="method",
        metavar="T",
    )  # fmt: skip
    out: str | None = out_option(None, "output folder for the PNGs")

    def __post_init__(self):
        if self.queries is not None and self.random is not None:
            raise ValueError(
                "--queries and --random both choose the queries; give one. Received: "
                f"--queries {','.join(map(str, self.queries))} --random {self.random}"
            )

    def query_ids(self, num_queries: int) -> list[int]:
        """The query ids to draw among `num_queries`."""
        return choose_queries(num_queries, self.queries, self.random, self.seed)
