"""`ImportSettings`: what `sare-tf import` reads and writes, one field per argument.

Pure Python, so that the command builds its flags from it at start-up (`sare_tf.config_options`).
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import image_size_option, option
from sare_tf.convert.formats import FORMATS
from sare_tf.registry import PRESETS


@dataclasses.dataclass(frozen=True)
class ImportSettings:
    """A checkpoint file or a known release to import (each field is an argument).

    Attributes:
        src: the checkpoint file (None with `preset`).
        preset: a known release, downloaded into `cache_dir` (from `mirror` when given).
        out: the `.keras` model to write (required with `src`; a preset's default: the cache).
        format: the checkpoint's format ("auto": from the name, and the keys for PyTorch files).
        image_size: the size the model was trained at, recorded in it.
        trained_on: what the checkpoint was trained on, recorded in the sidecar.
        pca, pca_dim: OpenIBL's separate PCA file and how many of its components to keep.
    """

    src: str | None = option(
        None, "the checkpoint: .pth / .pth.tar, .safetensors, a TF checkpoint (prefix, its "
        ".index or its folder), or a Keras weights file (.h5); or --preset", group="source",
        flag="SRC", nargs="?",
    )  # fmt: skip
    preset: str | None = option(
        None, "a known release, downloaded", group="source", choices=tuple(sorted(PRESETS))
    )
    format: str = option(
        "auto", "the checkpoint's format; auto: from the name, and for PyTorch files from the "
        "keys", group="source", choices=FORMATS,
    )  # fmt: skip
    cache_dir: str | None = option(
        None, "where presets are kept (default ~/.keras/models/sare_tf)", group="source",
        metavar="DIR",
    )  # fmt: skip
    mirror: str | None = option(
        None, "fetch the preset's file name from this base URL instead of the authors' URL",
        group="source", metavar="URL",
    )  # fmt: skip
    out: str | None = option(
        None, "the .keras model to write (required with SRC; with --preset, default: the cache)",
        group="output", metavar="MODEL.keras",
    )  # fmt: skip
    image_size: tuple[int, int] = image_size_option(
        "the image size the model was trained at, recorded in it (a preset records its "
        "authors' size)", default=(480, 640),
    )  # fmt: skip
    trained_on: str | None = option(
        None, "what the checkpoint was trained on (recorded)", group="output"
    )
    pca: str | None = option(
        None, "OpenIBL's pca_params_*.h5, for its checkpoints that keep the PCA apart",
        group="OpenIBL", metavar="H5",
    )  # fmt: skip
    pca_dim: int | None = option(
        None, "keep the first N components of --pca (default: all in the file, 4096 in OpenIBL)",
        group="OpenIBL", metavar="N",
    )  # fmt: skip

    def __post_init__(self):
        if (self.src is None) == (self.preset is None):
            raise ValueError("give either a checkpoint file (SRC) or --preset NAME.")
        if self.src is not None and self.out is None:
            raise ValueError("--out MODEL.keras is required with a checkpoint file.")
