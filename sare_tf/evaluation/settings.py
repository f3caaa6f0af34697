"""`EvaluationSettings`: what `sare-tf evaluate` measures and writes, one field per flag.

Pure Python, so that the command builds its flags from it at start-up
(`sare_tf.config_options`); the faiss index settings travel beside it as an `IndexConfig`.
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import (
    batch_size_option,
    dataset_option,
    image_root_option,
    image_size_option,
    model_option,
    option,
    out_option,
    precision_option,
    quiet_option,
    runtime_option,
)
from sare_tf.registry import RANKING_PROTOCOLS

# The ranking protocols of Recall@N, and the mAP protocols of Oxford / Paris and Holidays.
PROTOCOLS = (*RANKING_PROTOCOLS, "oxford", "holidays")
GROUND_TRUTHS = ("distance", "labels")


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """How models are evaluated on a dataset (each field is a flag of `sare-tf evaluate`).

    Attributes:
        model: the models, evaluated one after the other on the same dataset.
        dataset, image_root: the dataset (`GeoDataset.load`, or an Oxford / Paris / Holidays
            ground-truth folder) and the folder its image paths are relative to.
        image_size: every image resized to it; None: the size each model records.
        query_long_side: queries shrunk to this longer side (Tokyo 24/7's protocol).
        protocol: the ranking protocol ("auto" picks from the dataset).
        ground_truth: "distance" (within the positive radius) or "labels" (same place label).
        pca_dims, pca_from: the PCA-whitening sweep ("4096,2048,...") and its training set.
        sequence_length: sequence matching over this many frames (traversals only).
        save_predictions, only_wrong: the top-N panels per query (and only wrong ones).
        hloc_out, hloc_num_matched: hloc's global-feats.h5 and pairs file.
        tsne, keep_descriptors: the t-SNE maps and the descriptor .npy files.
    """

    model: tuple[str, ...] | None = model_option(many=True)
    runtime: str | None = runtime_option()
    precision: str | None = precision_option()
    image_size: tuple[int, int] | None = image_size_option(
        "resize every image to H x W (default: the size each model records, i.e. the size it "
        "was trained at; native image sizes for a model that records none)"
    )
    batch_size: int = batch_size_option(16)
    dataset: str | None = dataset_option(
        ".mat dbStruct, .csv, dataset folder, Oxford/Paris ground-truth folder or Holidays folder"
    )
    image_root: str | None = image_root_option()
    query_long_side: int | None = option(
        None, "shrink queries to this longer side (default 640 for Tokyo 24/7 without "
        "--image-size)", group="data",
    )  # fmt: skip
    protocol: str = option(
        "auto", "ranking protocol; 'auto' picks from the dataset", group="data",
        choices=PROTOCOLS,
    )  # fmt: skip
    ground_truth: str = option(
        "distance", "distance: a database image within the positive radius is correct; labels: "
        "one sharing the query's place label (Sf-0's building IDs, a CSV 'label' column)",
        group="data", choices=GROUND_TRUTHS,
    )  # fmt: skip
    pca_dims: str | None = option(
        None, "also report Recall@N with descriptors PCA-whitened to each size (first D "
        "components, then L2; one extraction), e.g. 4096,2048,1024,512,256,128 (the paper's "
        "Table 5)", group="analyses", metavar="D1,D2,...",
    )  # fmt: skip
    pca_from: str | None = dataset_option(
        "learn that PCA on this dataset's database images (e.g. the training split; default: "
        "the evaluated database)", flag="--pca-from", required=False,
    )  # fmt: skip
    sequence_length: int | None = option(
        None, "frame-aligned traversals only: also rank by sequence matching over L "
        "consecutive frames (SeqSLAM-style, velocity 1; odd L)", group="analyses", metavar="L",
    )  # fmt: skip
    tsne: bool = option(
        False, "also write t-SNE maps of the query descriptors per model: points coloured by "
        "place, and the query images drawn at their positions (the paper's Figs. 9-10)",
        group="analyses", switch="on",
    )  # fmt: skip
    out: str = out_option("runs/evaluate", "output folder")
    save_predictions: int = option(
        0, "write each query beside its top-N matches (green right, red wrong) as "
        "OUT/predictions/<model>/<query>.png, and predictions.txt with the paths",
        group="output", metavar="N",
    )  # fmt: skip
    only_wrong: bool = option(
        False, "with --save-predictions: only the queries whose top-1 is wrong",
        group="output", switch="on",
    )  # fmt: skip
    hloc_out: str | None = option(
        None, "also write hloc's global-feats.h5 (database and query descriptors, named by "
        "their paths relative to the image root) and pairs-from-retrieval.txt into "
        "DIR/<model>/", group="output", metavar="DIR",
    )  # fmt: skip
    hloc_num_matched: int = option(
        20, "database images per query in the hloc pairs file", group="output", metavar="K"
    )
    keep_descriptors: bool = option(
        False, "store descriptors as .npy files in the output folder (memory-mapped while "
        "written)", group="output", switch="on",
    )  # fmt: skip
    quiet: bool = quiet_option()

    def __post_init__(self):
        if self.save_predictions < 0:
            raise ValueError(
                "--save-predictions takes a positive N. Received: "
                f"--save-predictions {self.save_predictions}"
            )
        if self.save_predictions and self.ground_truth != "distance":
            raise ValueError(
                "--save-predictions needs the distance ground truth. Received: "
                f"--ground-truth {self.ground_truth}"
            )
        if self.only_wrong and not self.save_predictions:
            raise ValueError("--only-wrong applies to --save-predictions N; give N too.")
        if self.pca_from and not self.pca_dims:
            raise ValueError(
                f"--pca-from names where the PCA of --pca-dims is learnt; give --pca-dims too. "
                f"Received: --pca-from {self.pca_from}"
            )
