"""The settings of a training run (one dataclass, the CLI flags map onto it one to one)."""

from __future__ import annotations

import dataclasses
import os

from sare_tf.config_options import option
from sare_tf.image_size import check_image_size
from sare_tf.registry import AGGREGATOR_NAMES, BACKBONE_NAMES, LOSS_NAMES, PRECISION_POLICIES

STRATEGIES = ("none", "mirrored", "multiworker")


OPTIMIZERS = ("sgd", "adam")
# The Recall@N measured on the validation split after each epoch; any can pick best.keras.
VALIDATION_NS = (1, 5, 10)
SELECTION_METRICS = tuple(f"recall@{n}" for n in VALIDATION_NS)
# What a run builds when the settings leave the model open (and no initial model is given).
DEFAULT_BACKBONE = "vgg16"
DEFAULT_NUM_CLUSTERS = 64
DEFAULT_IMAGE_SIZE = (480, 640)


@dataclasses.dataclass
class TrainConfig:
    """Everything `sare_tf.training.train` needs; defaults are the paper's Pitts30k recipe.

    Attributes:
        dataset: training split (`.mat` dbStruct, `.csv` or folder; see `GeoDataset.load`).
        val_dataset: validation split for Recall@N after each epoch (None: no validation, no
            best checkpoint).
        image_root: folder the image paths are relative to (default: the dataset's own).
        out: run folder (checkpoints, backup, TensorBoard logs, summary.json).
        loss: loss name (`sare_tf.losses.LOSS_NAMES`: "sare-joint", "sare-ind", ...,
            "triplet", "contrastive").
        backbone: a name of `sare_tf.registry.BACKBONES` (None: vgg16, or the initial model's).
        aggregator: "netvlad" or "gem" (None: netvlad, or the initial model's).
        fc_dim: GeM's fully connected output size (None: no projection).
        weights: backbone weights: None (random), "imagenet" or a local weights file.
        initial_model: start from this `.keras` embedding model instead of building one; the
            model settings (backbone, num_clusters, weights) must then be left out (None) or
            agree with it, and the summary records the model's own.
        num_clusters: NetVLAD K (None: 64, or the initial model's).
        trainable_from: first trainable backbone layer ("default": conv5 for VGG16; for an
            initial model, the trainable layers it was saved with).
        epochs: epochs to train (30); 0 stops after cluster initialisation and writes
            `initial.keras` (the untrained baseline) and, with `val_dataset`, its recall.
        batch_size: tuples per batch (4), split over the replicas of a distribution strategy;
            with more than one replica, the incomplete last batch of each pass is dropped.
        num_negatives: negatives per tuple (10).
        lr: initial learning rate (1e-3).
        lr_halve_every: halve the learning rate every this many epochs (5; 0: never).
        optimizer: "sgd" (the paper's recipe; also the demo's, which trains a small backbone
            from scratch) or "adam" (AdamW with `weight_decay`; its first steps move every weight
            by about lr whatever the gradient, which collapsed from-scratch runs at 1e-3, see
            docs/training_collapse.md).
        weight_decay: weight decay (1e-3; Keras applies it decoupled: `w -= lr * wd * w`).
        momentum: SGD momentum (0.9; unused by "adam").
        image_size: `(height, width)` of training and validation images (None: the initial
            model's recorded size, else (480, 640)); recorded in the trained model.
        precision: "auto" (fp16 on a GPU; bf16 on a CPU with native bf16, else float32),
            "float32", "mixed_bfloat16", ...
        force_precision: allow "mixed_float16" without a GPU.
        strategy: "none", "mirrored" (all local GPUs / devices) or "multiworker" (the cluster
            in TF_CONFIG; run the same command on every worker: the chief writes `out`,
            worker i writes `out/worker_i`).
        num_candidates: random negatives sampled per query when mining (1000).
        refresh_every: training queries between mining refreshes (1000).
        mining_mode: "full" (re-encode everything) or "partial" (see `HardNegativeMining`).
        partial_db_size: database images per partial refresh (default `num_candidates`).
        mining_grow_with_lr: lengthen the refresh interval as the learning rate drops.
        cluster_images: images sampled for NetVLAD cluster initialisation (500).
        descriptors_per_image: local descriptors kept per image for clustering (100).
        eval_batch_size: images per batch when encoding for mining and validation.
        val_every: validate every this many epochs (and after the last).
        select_by: the validation metric whose best epoch is saved as `best.keras`
            ("recall@5", the paper's; "recall@1" or "recall@10").
        validate_before_training: also measure validation recall before the first epoch.
        augment: photometric / crop augmentation in the tuple pipeline.
        steps_per_epoch: cap the batches per epoch (None: one pass over the training queries).
        backup_every: batches between backups for resuming (None: once per epoch).
        tensorboard: write TensorBoard logs to `out/tensorboard`.
        seed: seed of every random choice (initial weights, shuffling, mining, cluster init):
            the same seed gives the same run on the same machine and precision.
        verbose: 0 silent, 1 progress bars and messages.
    """

    dataset: str | None = option(
        None,
        "training split: .mat dbStruct, .csv (FILE.csv:SET) or folder",
        group="data",
        required=True,
    )
    val_dataset: str | None = option(
        None, "validation split for Recall@N after each epoch", group="data"
    )
    image_root: str | None = option(None, "folder the image paths are relative to", group="data")
    out: str = option("runs/train", "run folder", group="run")
    loss: str = option(
        "sare-joint",
        "sare-joint, sare-ind, sare-joint-cauchy, sare-ind-cauchy, sare-joint-exp, sare-ind-exp, "
        "triplet, contrastive, or the paper's Sec. 7.6 comparison: npair, angular, lifted, "
        "geo-classification (single images, 25 m cells, a softmax head dropped after training)",
        group="optimisation",
        choices=LOSS_NAMES,
    )
    backbone: str | None = option(
        None,
        "vgg16 (default); resnet18/50/101 are torchvision's; tiny for tests and the demo; "
        "not with --initial-model",
        group="model",
        choices=BACKBONE_NAMES,
    )
    aggregator: str | None = option(
        None,
        "netvlad (default), crn-netvlad (NetVLAD reweighted by CRN), gem (GeM pooling, with "
        "--fc-dim as CosPlace / EigenPlaces), boq "
        "(Bag-of-Queries with the authors' settings) or salad (MegaLoc's optimal transport on a "
        "-tokens backbone, --fc-dim for its projection); not with --initial-model",
        group="model",
        choices=AGGREGATOR_NAMES,
    )
    fc_dim: int | None = option(
        None,
        "GeM's or salad's fully connected output size (default: no projection)",
        group="model",
    )
    weights: str | None = option(
        None, "backbone weights: 'imagenet' (downloaded by Keras) or a local weights file "
        "(default: random)", group="model",
    )  # fmt: skip
    initial_model: str | None = option(
        None,
        "start from this .keras embedding model (its backbone, clusters and image size)",
        group="model",
    )
    num_clusters: int | None = option(
        None, "NetVLAD K (default: 64); not with --initial-model", group="model"
    )
    trainable_from: str | None = option(
        "default",
        "first trainable backbone layer (default: conv5 for VGG16; 'all' trains everything)",
        group="model",
        from_cli=lambda value: None if value == "all" else value,
    )
    epochs: int = option(
        30, "epochs; 0 writes OUT/initial.keras, the cluster-initialised untrained model (and its "
        "validation recall with --val-dataset)", group="optimisation",
    )  # fmt: skip
    batch_size: int = option(4, "tuples per batch", group="optimisation")
    num_negatives: int = option(10, "negatives per tuple", group="optimisation")
    geo_cell_m: float = option(
        25.0, "cell size in metres of --loss geo-classification (Vo et al.; the SARE appendix)",
        group="optimisation",
    )  # fmt: skip
    lr: float = option(1e-3, "learning rate", group="optimisation")
    lr_halve_every: int = option(
        5, "halve the learning rate every N epochs (0: never)", group="optimisation"
    )
    optimizer: str = option(
        "sgd", "sgd (the paper's recipe) or adam (AdamW: steadier from scratch)",
        group="optimisation", choices=OPTIMIZERS,
    )  # fmt: skip
    weight_decay: float = option(1e-3, "weight decay", group="optimisation")
    momentum: float = option(0.9, "SGD momentum", group="optimisation")
    image_size: tuple[int, int] | None = option(
        None, "training / validation image size, recorded in the trained model (default: the "
        "--initial-model's recorded size, else 480 640)", group="data", nargs=2, type=int,
        metavar=("H", "W"),
    )  # fmt: skip
    precision: str = option(
        "auto", "auto: mixed_float16 on a GPU; on a CPU mixed_bfloat16 with native bf16 (AMX, "
        "AVX512-BF16, Arm BF16), else float32", group="run",
        choices=PRECISION_POLICIES,
    )  # fmt: skip
    force_precision: bool = option(
        False, "allow mixed_float16 without a GPU", group="run", switch="on"
    )
    strategy: str = option(
        "none", "tf.distribute: mirrored (local GPUs) or multiworker (hosts from TF_CONFIG)",
        group="run", choices=STRATEGIES,
    )  # fmt: skip
    num_candidates: int = option(
        1000, "random negatives sampled per query", group="hard-negative mining"
    )
    refresh_every: int = option(
        1000, "training queries between re-minings", group="hard-negative mining"
    )
    mining_mode: str = option(
        "full", "full: re-encode all queries and the database; partial: only the next chunk of "
        "queries, their positives and a shared random database subset",
        group="hard-negative mining", choices=("full", "partial"),
    )  # fmt: skip
    partial_db_size: int | None = option(
        None,
        "database images per partial refresh (default: --num-candidates)",
        group="hard-negative mining",
    )
    mining_grow_with_lr: bool = option(
        False, "lengthen the refresh interval as the learning rate drops",
        group="hard-negative mining", switch="on",
    )  # fmt: skip
    cluster_images: int = option(
        500, "images sampled for NetVLAD cluster initialisation", group="hard-negative mining"
    )
    descriptors_per_image: int = option(
        100, "local descriptors kept per image for clustering", group="hard-negative mining"
    )
    eval_batch_size: int = option(
        16,
        "images per batch when encoding for mining and validation",
        group="hard-negative mining",
    )
    val_every: int = option(1, "validate every N epochs", group="run")
    select_by: str = option(
        "recall@5", "validation metric whose best epoch is saved as OUT/best.keras",
        group="run", choices=SELECTION_METRICS,
    )  # fmt: skip
    validate_before_training: bool = option(
        False, "also measure validation recall before the first epoch", group="run", switch="on"
    )
    augment: bool = option(
        False, "colour jitter and small crops on training tuples", group="data", switch="on"
    )
    steps_per_epoch: int | None = option(
        None,
        "cap the batches per epoch (default: one pass over the training queries)",
        group="optimisation",
    )
    backup_every: int | None = option(
        200, "batches between resume backups (0: at epoch ends only)", group="run",
        from_cli=lambda value: value or None,
    )  # fmt: skip
    tensorboard: bool = option(
        True, "do not write OUT/tensorboard", group="run", flag="--no-tensorboard", switch="off"
    )
    seed: int = option(0, "seed of every random choice", group="run")
    verbose: int = option(
        1, "no progress bars", group="run", flag="--quiet", switch="on",
        from_cli=lambda quiet: 0 if quiet else 1, cli_default=False,
    )  # fmt: skip

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = check_image_size(self.image_size)
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"Unknown strategy. Expected one of {STRATEGIES}. Received: strategy={self.strategy!r}"
            )
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(
                f"`epochs` must be a non-negative integer (0: initialise only). "
                f"Received: epochs={self.epochs!r}"
            )
        if self.num_clusters is not None and (
            not isinstance(self.num_clusters, int) or self.num_clusters < 1
        ):
            raise ValueError(
                f"`num_clusters` must be a positive integer. Received: num_clusters={self.num_clusters!r}"
            )
        if self.select_by not in SELECTION_METRICS:
            raise ValueError(
                f"Unknown selection metric. Expected one of {SELECTION_METRICS}. "
                f"Received: select_by={self.select_by!r}"
            )
        for name in ("batch_size", "num_negatives", "refresh_every", "num_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        for name in ("lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and value == value):
                raise ValueError(
                    f"`{name}` must be a non-negative number. Received: {name}={value!r}"
                )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer. Expected one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive. Received: lr={self.lr}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                f"`steps_per_epoch` must be >= 1 or None. Received: {self.steps_per_epoch}"
            )
        if self.backup_every is not None and self.backup_every < 1:
            raise ValueError(f"`backup_every` must be >= 1 or None. Received: {self.backup_every}")

    @classmethod
    def from_dict(cls, record: dict) -> TrainConfig:
        """The config a `to_dict()` (e.g. a run's `summary.json` "config") records; keys that are
        not settings are left out, lists become tuples."""
        if not isinstance(record, dict):
            raise ValueError(
                f"A training config is a JSON object. Received: {type(record).__name__}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in record.items()
            if key in fields
        }
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-friendly dict of every setting."""
        data = dataclasses.asdict(self)
        data["image_size"] = None if self.image_size is None else list(self.image_size)
        for key, value in data.items():
            if isinstance(value, os.PathLike):
                data[key] = os.fspath(value)
            elif value is not None and not isinstance(value, str | int | float | bool | list):
                data[key] = repr(value)
        return data
