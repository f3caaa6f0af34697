"""The settings of `sare-tf index build|add` and `sare-tf localize`, one field per flag.

Pure Python, so that the commands build their flags from them at start-up
(`sare_tf.config_options`); the faiss settings of a build travel as an `IndexConfig`.
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import (
    MODEL_HELP,
    batch_size_option,
    dataset_option,
    image_root_option,
    model_option,
    option,
    out_option,
    quiet_option,
    runtime_option,
)


@dataclasses.dataclass(frozen=True)
class IndexSourceSettings:
    """What `index build` and `index add` encode: a dataset's database images, with a model.

    Attributes:
        model, runtime: the model (and the runtime its file must be for).
        dataset, image_root: whose database images are indexed.
        batch_size: images per model call; chunk_size: images per resumable chunk.
        quiet: no progress output.
    """

    model: str | None = model_option()
    runtime: str | None = runtime_option()
    batch_size: int = batch_size_option(16)
    dataset: str | None = dataset_option(
        "whose database images to index: .mat dbStruct, .csv (FILE.csv:SET) or folder"
    )
    image_root: str | None = image_root_option()
    chunk_size: int = option(
        512, "images per resumable chunk: a killed build redoes at most one", group="model"
    )
    quiet: bool = quiet_option()


@dataclasses.dataclass(frozen=True)
class IndexBuildSettings(IndexSourceSettings):
    """`index build`: the source, and where the new index goes (`out`, `overwrite`, `shard`)."""

    out: str | None = out_option(None, "the index folder to write")
    overwrite: bool = option(
        False, "replace an index already in --out", group="output", switch="on"
    )
    shard: str | None = option(
        None, "encode only part I of N (merge them later)", group="output", metavar="I/N"
    )


@dataclasses.dataclass(frozen=True)
class LocalizeSettings:
    """How `sare-tf localize` answers (each field is a flag of the command).

    Attributes:
        index: the place index folder.
        model, runtime: the model (None: the one the index was built with).
        top_k: matches per photo; radius: the consensus radius in metres.
        dataset, image_root: a dataset whose queries include the photos (answers marked).
        report: an HTML report; hloc_out, hloc_image_dir: hloc's files and their image folder.
        batch_size: images per model call.
    """

    index: str | None = option(
        None, "the place index folder", group="model", metavar="DIR", required=True
    )
    model: str | None = option(
        None, f"the model (default: the one the index was built with): {MODEL_HELP}",
        group="model", metavar="PATH",
    )  # fmt: skip
    runtime: str | None = runtime_option()
    batch_size: int = batch_size_option(16)
    top_k: int = option(10, "matches per photo, at most the index's size", group="answers")
    radius: float = option(25.0, "consensus radius in metres", group="answers", metavar="M")
    dataset: str | None = dataset_option(
        "a dataset whose queries include the photos: answers are marked right or wrong",
        required=False,
    )
    image_root: str | None = image_root_option()
    report: str | None = option(None, "also write this HTML report", group="output", metavar="HTML")
    hloc_out: str | None = option(
        None, "also write hloc's pairs-from-retrieval.txt (each photo with its top-K matches) "
        "and global-feats.h5 (the photos' and the index's descriptors) into DIR",
        group="output", metavar="DIR",
    )  # fmt: skip
    hloc_image_dir: str | None = option(
        None, "the image folder hloc names images relative to (default: the folder holding the "
        "photos and the database images)", group="output", metavar="DIR",
    )  # fmt: skip

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1. Received: --top-k {self.top_k}")
        if not self.radius > 0:
            raise ValueError(f"--radius must be positive metres. Received: --radius {self.radius}")
