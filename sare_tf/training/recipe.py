"""The fit recipe: NetVLAD + a tuple loss trained with `model.fit` as in the SARE paper.

    dataset -> MiningState -> tuple tf.data  ->  tuple model (embedding inside)  ->  loss
                    ^                                      |
                    +---- HardNegativeMining (every 1000 queries) <-- current weights

SGD (momentum 0.9, weight decay 1e-3), learning rate 1e-3 halved every 5 epochs, 4 tuples of
1 query + 1 positive + 10 negatives per batch, up to 30 epochs; NetVLAD clusters initialised
from training images before the first step; validation Recall@1/5/10 after every epoch; the
best-by-Recall@5 embedding model kept as `best.keras`.

A run reads top-down as its stages (`TrainingRun.run`): load data, build the model, initialise
(resume from the backup, or cluster NetVLAD), start the summary, make the tuple pipeline and
mining, make the callbacks, fit, finish. `epochs=0` stops after initialisation and writes the
untrained, cluster-initialised model (`initial.keras`), the baseline papers report.

The run folder and its summary belong to `sare_tf.training.run_folder.RunFolder`; resuming to
`sare_tf.training.backup.ResumableBackup`.

Multi-worker runs (`strategy="multiworker"`, the cluster in `TF_CONFIG`): every worker runs the
same command and the whole recipe (cluster init, mining, validation) on its own copy of the
data and weights; the chief's weights are broadcast after cluster init, so all workers mine
the same tuples. The chief writes the run folder; worker i writes the same files under
`out/worker_i/` (its own backup, to resume from: all workers must resume from the same point).

Reference:
    Liu, Li, Dai, "Stochastic Attraction-Repulsion Embedding for Large Scale Image
    Localization", ICCV 2019, sec. 5 (training details); Arandjelovic et al., NetVLAD, CVPR
    2016, appendix (mining, cluster initialisation).
"""

from __future__ import annotations

import logging
import math
import os
import time

import keras

from sare_tf.artifacts import (
    compute_precision,
    describe_model,
    read_keras_model,
    set_inference_precision,
    store_image_size,
    stored_image_size,
)
from sare_tf.atomic import save_model_atomic
from sare_tf.cluster_init import initialize_netvlad
from sare_tf.data import GeoDataset
from sare_tf.data.cell_labels import assign_cells
from sare_tf.data.image_batches import labelled_image_dataset
from sare_tf.data.tuples import MiningState, TuplePipeline
from sare_tf.losses import IMAGE_LOSSES, get_loss
from sare_tf.mining import HardNegativeMining, MiningSettings, PartialRefresh
from sare_tf.model import build_geo_classifier, needs_cluster_init
from sare_tf.models import build_embedding_model, build_tuple_model, freeze_before
from sare_tf.precision import set_precision
from sare_tf.training import callbacks as cb
from sare_tf.training.backup import ResumableBackup
from sare_tf.training.callbacks import ValidationRecall
from sare_tf.training.config import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_CLUSTERS,
    TrainConfig,
)
from sare_tf.training.multiworker import (
    broadcast_from_chief,
    check_same_backup_position,
    prepare_multiworker_fit,
)
from sare_tf.training.run_folder import (
    BACKUP_DIR,
    BEST_MODEL_FILE,
    INITIAL_MODEL_FILE,
    LAST_MODEL_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    RunFolder,
)
from sare_tf.training.strategy import is_chief, is_multiworker, make_strategy, worker_id

logger = logging.getLogger(__name__)

__all__ = [
    "BACKUP_DIR",
    "BEST_MODEL_FILE",
    "INITIAL_MODEL_FILE",
    "LAST_MODEL_FILE",
    "SUMMARY_FILE",
    "TrainingDivergedError",
    "TrainingRun",
    "is_chief",
    "make_optimizer",
    "make_strategy",
    "train",
]

# Database images encoded at every epoch end to watch for an embedding collapse.
COLLAPSE_PROBE_IMAGES = 32


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite; training was stopped (the summary says where)."""


def train(config: TrainConfig, train_data=None, val_data=None, embedding_model=None) -> dict:
    """Trains an embedding model with hard-negative mining and returns the run summary.

    Args:
        config: the run's settings (`TrainConfig`).
        train_data: a `GeoDataset` to use instead of loading `config.dataset`.
        val_data: a `GeoDataset` to use instead of loading `config.val_dataset`.
        embedding_model: a model to train instead of building one from the config (it keeps
            the dtype policy it was built with, and `config.precision` must be "auto" or that
            policy; it must not be inside another strategy scope).

    Returns:
        The summary dict (also in `config.out/summary.json`): "status" ("completed",
        "initialized" for `epochs=0`, "stopped_collapsed" with "stopped" when collapse recovery
        gave up), "config", "seed", "model" (what was trained: backbone,
        NetVLAD K, descriptor and image size), "datasets", "precision", "strategy", "epochs"
        (per-epoch loss, learning rate, validation recall, timings), "best", "mining",
        "collapse" (epochs where the embedding collapsed and how each was recovered: restored
        epoch, learning-rate scale), "timings", "paths".

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (summary status "diverged").
        ValueError / FileNotFoundError: bad settings or data, with the value or file at fault.

    Example:
        >>> summary = train(TrainConfig(dataset="pitts30k_train.mat",
        ...                             val_dataset="pitts30k_val.mat",
        ...                             weights="imagenet", out="runs/pitts30k_sare_joint"))
        >>> summary["best"]["val_recall@5"]
    """

    previous_policy = keras.config.dtype_policy().name
    try:
        return TrainingRun(config).run(train_data, val_data, embedding_model)
    finally:
        # In-process callers (the demo, notebooks) get their global policy back.
        keras.config.set_dtype_policy(previous_policy)


def make_optimizer(config: TrainConfig):
    """SGD with momentum and decoupled weight decay (the paper), or AdamW."""

    if config.optimizer == "adam":
        return keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(
        learning_rate=config.lr, momentum=config.momentum, weight_decay=config.weight_decay or None
    )


def load_datasets(config, train_data=None, val_data=None):
    """The training and validation `GeoDataset`s (given, or loaded from the config's paths)."""

    if train_data is None:
        if not config.dataset:
            raise ValueError("No training dataset: set `dataset` (CLI: --dataset).")
        train_data = GeoDataset.load(config.dataset, config.image_root)
    if val_data is None and config.val_dataset:
        val_data = GeoDataset.load(config.val_dataset, config.image_root)
    if train_data.train_query_ids().size == 0:
        raise ValueError(
            f"No training query of {train_data.name!r} has a database image within "
            f"{train_data.nontriv_pos_dist_thr:g} m: there is nothing to train on."
        )
    if val_data is not None and (val_data.num_queries == 0 or val_data.num_db == 0):
        raise ValueError(f"The validation split {val_data.name!r} has no queries or no database.")
    return train_data, val_data


def check_batch_fits_replicas(batch_size: int, num_replicas: int, train_data) -> None:
    """Every replica needs a tuple of every batch, and a pass needs one whole batch."""
    if batch_size < num_replicas:
        raise ValueError(
            f"`batch_size` (tuples per batch, split over the replicas) must be at least the "
            f"number of replicas, {num_replicas}. Received: batch_size={batch_size}"
        )
    num_queries = int(train_data.train_query_ids().size)
    if num_queries < batch_size:
        raise ValueError(
            f"With {num_replicas} replicas the incomplete last batch of each pass is dropped, "
            f"and {train_data.name!r} has only {num_queries} training queries: use a "
            f"`batch_size` of at most {num_queries}. Received: batch_size={batch_size}"
        )


def check_initial_model_settings(config: TrainConfig, described: dict) -> None:
    """Refuses model settings that contradict the `--initial-model` they would be ignored for."""
    conflicts = [
        f"--{flag.replace('_', '-')} {given} (the model has {actual})"
        for flag, given, actual in (
            ("backbone", config.backbone, described["backbone"]),
            ("num_clusters", config.num_clusters, described["num_clusters"]),
            ("aggregator", config.aggregator, described["aggregator"]),
        )
        if given is not None and given != actual
    ]
    if config.weights is not None:
        conflicts.append(f"--weights {config.weights} (the model brings its own weights)")
    if conflicts:
        raise ValueError(
            f"The initial model {config.initial_model} is trained as it is; these settings "
            f"contradict it: {'; '.join(conflicts)}. Leave them out."
        )


def initial_model(config: TrainConfig, precision: str):
    """The `--initial-model` embedding model, checked against the config, in `precision`."""

    if not os.path.isfile(config.initial_model):
        raise FileNotFoundError(f"Initial model not found: {config.initial_model}")
    model = read_keras_model(config.initial_model)
    check_initial_model_settings(config, describe_model(model))
    if config.trainable_from != "default":
        freeze_before(model, config.trainable_from)
    set_inference_precision(model, precision)
    return model


class TrainingRun:
    """One training run, stage by stage (see the module docstring); `run()` runs them in order.

    Args:
        config: the run's settings.
    """

    def __init__(self, config: TrainConfig):
        self.config = config
        self.timings: dict[str, float] = {}

    def run(self, train_data=None, val_data=None, embedding_model=None) -> dict:

        start = time.perf_counter()
        config = self.config
        # Before anything random: the same seed gives the same initial weights, tuples, run.
        keras.utils.set_random_seed(config.seed)
        self.train_data, self.val_data = load_datasets(config, train_data, val_data)
        self.precision = self._set_precision(embedding_model)
        self.strategy = make_strategy(config.strategy)
        self.multiworker = is_multiworker(self.strategy)
        self.folder = RunFolder(config.out, worker_id(self.strategy))

        self.backup = ResumableBackup(
            self.folder.file(BACKUP_DIR), save_freq=config.backup_every or "epoch"
        )
        resuming = self.backup.exists()
        self._build_models(embedding_model)
        resume_epoch = self._initialise(resuming)
        self._start_summary(resuming)
        if config.epochs == 0:
            return self._finish_initialized(start)
        dataset, batches_per_pass, mining = self._make_pipeline(resume_epoch)
        callbacks = self._make_callbacks(mining)
        self._fit(dataset, self.config.steps_per_epoch or batches_per_pass, callbacks)
        return self._finish(mining, start)

    # --- stages ------------------------------------------------------------------------------

    def _set_precision(self, embedding_model) -> str:

        config = self.config
        if embedding_model is None:
            return set_precision(config.precision, force=config.force_precision)
        policy = compute_precision(embedding_model)
        if config.precision not in ("auto", policy):
            raise ValueError(
                f"The model passed in computes in {policy}; `precision` cannot change that. "
                f"Build the model under the policy you want. Received: precision={config.precision!r}"
            )
        keras.config.set_dtype_policy(policy)
        return policy

    def _build_models(self, embedding_model) -> None:

        config = self.config
        self.by_images = config.loss in IMAGE_LOSSES
        # Each replica trains on batch_size / replicas tuples of every batch. The incomplete last
        # batch of a pass is dropped: it could leave a replica with no tuple, and TensorFlow
        # fails on an empty batch (and all workers must run the same number of steps).
        self.drop_remainder = self.strategy.num_replicas_in_sync > 1
        if self.drop_remainder:
            check_batch_fits_replicas(
                config.batch_size, self.strategy.num_replicas_in_sync, self.train_data
            )
        with self.strategy.scope():
            if embedding_model is None and config.initial_model:
                embedding_model = initial_model(config, self.precision)
            elif embedding_model is None:
                embedding_model = build_embedding_model(
                    config.backbone or DEFAULT_BACKBONE,
                    num_clusters=config.num_clusters or DEFAULT_NUM_CLUSTERS,
                    aggregator=config.aggregator or "netvlad",
                    fc_dim=config.fc_dim,
                    weights=config.weights,
                    trainable_from=config.trainable_from,
                )
            self.image_size = tuple(
                config.image_size or stored_image_size(embedding_model) or DEFAULT_IMAGE_SIZE
            )
            store_image_size(embedding_model, self.image_size)
            self.embedding = embedding_model
            self.loss = get_loss(config.loss)
            if self.by_images:
                # Only `self.embedding` is ever saved, never the classifier around it.
                self.cells = assign_cells(self.train_data.db_utm, config.geo_cell_m)
                self.fit_model = build_geo_classifier(
                    embedding_model, self.cells.num_cells, seed=config.seed
                )
            else:
                self.fit_model = build_tuple_model(embedding_model, config.num_negatives)
            self.fit_model.compile(
                optimizer=make_optimizer(config), loss=self.loss, jit_compile=False
            )
            # Now, in the scope, alike on every worker (creating a variable is a collective
            # under MultiWorkerMirroredStrategy); a resumed run loads its state into it.
            self.fit_model.optimizer.build(self.fit_model.trainable_variables)

    def _initialise(self, resuming: bool) -> int:
        """Resumes from the backup or clusters NetVLAD; returns the epoch to start at."""

        config = self.config
        position = self.backup.restore_into(self.fit_model) if resuming else (-1, -1)
        if self.multiworker:
            check_same_backup_position(self.strategy, position, self.backup.backup_dir)
        if resuming:
            logger.info(
                f"Resuming the run in {self.folder.path} from its backup "
                f"(epoch {max(position[0], 0) + 1})."
            )
        elif needs_cluster_init(self.embedding):
            start = time.perf_counter()
            initialize_netvlad(
                self.embedding,
                self.train_data.db_image_paths(),
                self.image_size,
                descriptors_per_image=config.descriptors_per_image,
                max_images=config.cluster_images,
                batch_size=config.eval_batch_size,
                seed=config.seed,
                verbose=bool(config.verbose),
            )
            self.timings["cluster_init_seconds"] = time.perf_counter() - start
        if self.multiworker:
            # Cluster init (or a loaded model) was set by each worker on its own copy.
            broadcast_from_chief(self.strategy, self.embedding.weights)
        return max(position[0], 0)

    def _start_summary(self, resuming: bool) -> None:

        model = describe_model(self.embedding)
        # The config as run: the model's own backbone, K and image size, not the flags' defaults.
        config = {
            **self.config.to_dict(),
            "backbone": model["backbone"],
            "num_clusters": model["num_clusters"],
            "image_size": list(self.image_size),
        }
        self.folder.start_summary(
            resuming,
            config=config,
            seed=self.config.seed,
            model=model,
            datasets={
                "train": self.train_data.summary(),
                "val": None if self.val_data is None else self.val_data.summary(),
            },
            precision=self.precision,
            strategy={
                "name": self.config.strategy,
                "num_replicas": self.strategy.num_replicas_in_sync,
            },
        )
        for name, seconds in self.timings.items():
            self.folder.add_timing(name, seconds)

    def _make_pipeline(self, resume_epoch: int):
        """The endless tuple dataset, its batches per pass over the training queries and the
        mining callback, with the first tuples mined (or, for an image objective, the labelled
        images and no mining).

        The dataset repeats and `fit` is given the batches of a pass as its epoch: Keras then
        keeps one iterator for the whole run. Given a dataset that ends, Keras makes a new
        iterator at every epoch's start and drops the previous one.
        """
        if self.by_images:
            return (*self._make_image_pipeline(resume_epoch), None)

        config, data = self.config, self.train_data
        # The mining state lives outside the strategy scope: tf.data reads it on the host.
        state = MiningState(data.num_queries, config.num_negatives, num_db=data.num_db)
        pipeline = TuplePipeline(
            data,
            state,
            image_size=self.image_size,
            batch_size=config.batch_size,
            augment=config.augment,
            seed=config.seed,
            drop_remainder=self.drop_remainder,
        )
        dataset = pipeline.tf_dataset().repeat()
        if self.multiworker:
            prepare_multiworker_fit(self.fit_model, dataset.element_spec)
        if resume_epoch:
            # Pass e is shuffled with seed (seed, e): a resumed run continues the uninterrupted
            # run's sequence of query orders instead of replaying the first one.
            state.epoch.assign(resume_epoch)
        policy = (
            PartialRefresh(db_size=config.partial_db_size)
            if config.mining_mode == "partial"
            else config.mining_mode
        )
        settings = MiningSettings(
            refresh_every=config.refresh_every, num_candidates=config.num_candidates,
            policy=policy, grow_with_lr=config.mining_grow_with_lr, initial_lr=config.lr,
            encode_batch_size=config.eval_batch_size, seed=config.seed + 1000 * resume_epoch,
        )  # fmt: skip
        mining = HardNegativeMining(
            pipeline, settings, embedding_model=self.embedding, verbose=config.verbose,
            mine_on_train_begin=False,
        )  # fmt: skip
        # Mine before fit: a distributed fit peeks at one batch before any callback runs.
        mining.set_model(self.fit_model)
        start = time.perf_counter()
        mining.refresh(full=True)
        self.folder.add_timing("initial_mining_seconds", time.perf_counter() - start)
        # After the first mining: the batch count follows the queries that have tuples.
        return dataset, pipeline.batches_per_pass(), mining

    def _make_image_pipeline(self, resume_epoch: int):
        """Training database images with their cell labels (geographic classification), endless,
        and the batches of one pass over them."""

        config = self.config
        logger.info(
            f"Geographic classification: {self.cells.num_cells} non-empty {config.geo_cell_m:g} m "
            f"cells over {self.train_data.num_db} training database images"
        )
        batch_size = config.batch_size * (2 + config.num_negatives)  # the images of a tuple batch
        dataset = labelled_image_dataset(
            self.train_data.db_image_paths(), self.cells.labels, self.image_size,
            batch_size=batch_size, seed=config.seed + resume_epoch,
        ).repeat()  # fmt: skip
        if self.multiworker:
            prepare_multiworker_fit(self.fit_model, dataset.element_spec)
        self.folder.summary["geo_classification"] = {
            "cell_m": config.geo_cell_m,
            "num_cells": self.cells.num_cells,
            "images": self.train_data.num_db,
        }
        return dataset, -(-self.train_data.num_db // batch_size)

    def _validation(self):
        """The validation callback (None without a validation split)."""

        if self.val_data is None:
            return None
        validation = ValidationRecall(
            self.val_data,
            self.image_size,
            embedding_model=self.embedding,
            batch_size=self.config.eval_batch_size,
            every=self.config.val_every,
            verbose=self.config.verbose,
        )
        validation.set_model(self.fit_model)
        summary = self.folder.summary
        wanted = self.config.validate_before_training or self.config.epochs == 0
        if wanted and "initial_validation" not in summary:
            start = time.perf_counter()
            summary["initial_validation"] = validation.evaluate()
            self.folder.add_timing("initial_validation_seconds", time.perf_counter() - start)
        return validation

    def _make_callbacks(self, mining) -> list:

        config, folder = self.config, self.folder
        validation = self._validation()
        best = folder.summary.get("best") or {}
        monitor = f"val_{config.select_by}"
        probes = self.train_data.db_image_paths()[:COLLAPSE_PROBE_IMAGES]
        # A collapsed embedding gives every image the same logits: about ln(C) at the start.
        uniform = (
            math.log(self.cells.num_cells)
            if self.by_images
            else cb.uniform_loss(self.loss, config.num_negatives)
        )
        self.collapse = cb.CollapseDetector(
            uniform,
            probes,
            self.image_size,
            self.embedding,
            learning_rate=config.lr,
            batch_size=config.eval_batch_size,
            previous=folder.summary.get("collapse"),
        )
        self.checkpoint = cb.BestModelCheckpoint(
            folder.file(BEST_MODEL_FILE),
            monitor=monitor,
            embedding_model=self.embedding,
            # None: the best so far are weights a collapse recovery restored (value unknown).
            best=float("-inf") if best.get(monitor) is None else best[monitor],
            best_epoch=best.get("epoch"),
            best_spread=best.get("spread", True),
            last_path=folder.file(LAST_MODEL_FILE),
            collapse=self.collapse,
        )
        self.nan_guard = cb.NaNGuard()
        self.run_summary = cb.RunSummary(
            folder.summary_path, folder.summary, mining, validation, self.checkpoint, self.collapse
        )
        schedule = cb.halving_schedule(config.lr, config.lr_halve_every)
        callbacks = [
            *([mining] if mining is not None else []),
            # A collapse recovery lowers the rate: the schedule times the detector's scale.
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: schedule(epoch) * self.collapse.lr_scale
            ),
            *([validation] if validation is not None else []),
            self.collapse,  # before the checkpoint: a collapsed epoch is never the best
            self.checkpoint,
            self.nan_guard,
            keras.callbacks.TerminateOnNaN(),
            self.run_summary,
        ]
        if config.tensorboard:
            callbacks.append(cb.TensorBoardScalars(folder.file(TENSORBOARD_DIR)))
        # Last, so that the summary and checkpoints of an epoch are on disk before its backup.
        callbacks.append(self.backup)
        folder.write()
        return callbacks

    def _fit(self, dataset, steps_per_epoch: int, callbacks) -> None:
        start = time.perf_counter()
        self.fit_model.fit(
            dataset,
            epochs=self.config.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=self.config.verbose,
            shuffle=False,  # the pipelines shuffle (seeded, per pass)
        )
        self.folder.add_timing("fit_seconds", time.perf_counter() - start)  # this run only

    def _finish(self, mining, start: float) -> dict:
        folder = self.folder
        if mining is not None:
            folder.add_mining(self.config.mining_mode, mining.refreshes)
        folder.add_timing("total_seconds", time.perf_counter() - start)
        failure = self.nan_guard.failure
        if failure is None and self.collapse.stopped:
            return folder.finish("stopped_collapsed", stopped=self.collapse.stopped)
        if failure is None:
            return folder.finish("completed")
        folder.finish("diverged", failure=failure)
        best_text = (
            f"the best model so far is {folder.file(BEST_MODEL_FILE)}"
            if self.checkpoint.best_epoch
            else "no checkpoint was written"
        )
        hint = "" if self.precision == "float32" else f", precision float32 (was {self.precision})"
        raise TrainingDivergedError(
            f"Training stopped: the loss became {failure['loss']} at epoch {failure['epoch']}, "
            f"batch {failure['batch']} (keras.callbacks.TerminateOnNaN); {best_text}; summary: "
            f"{folder.summary_path}. Try a lower learning rate (lr={self.config.lr}){hint}, or "
            "check the training images."
        )

    def _finish_initialized(self, start: float) -> dict:
        """`epochs=0`: the cluster-initialised model, untrained, and its validation recall."""

        self._validation()
        save_model_atomic(self.embedding, self.folder.file(INITIAL_MODEL_FILE))
        self.folder.summary["paths"]["initial_model"] = INITIAL_MODEL_FILE
        self.folder.add_timing("total_seconds", time.perf_counter() - start)
        return self.folder.finish("initialized")
