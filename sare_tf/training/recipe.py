"""The fit recipe: NetVLAD + a tuple loss trained with `model.fit` as in the SARE paper.

    dataset -> MiningState -> tuple tf.data  ->  tuple model (embedding inside)  ->  loss
                    ^                                      |
                    +---- HardNegativeMining (every 1000 queries) <-- current weights

SGD (momentum 0.9, weight decay 1e-3), learning rate 1e-3 halved every 5 epochs, 4 tuples of
1 query + 1 positive + 10 negatives per batch, up to 30 epochs; NetVLAD clusters initialised
from training images before the first step; validation Recall@1/5/10 after every epoch; the
best-by-Recall@5 embedding model kept as `best.keras`.

Run folder (`config.out`):
    summary.json     config, dataset summaries, per-epoch metrics and timings (atomic writes)
    best.keras       embedding model with the best validation Recall@5 (atomic writes)
    last.keras       embedding model after the last finished epoch (atomic writes)
    backup/          `keras.callbacks.BackupAndRestore` state; present only while a run is
                     unfinished. Running the same command again resumes from it.
    tensorboard/     TensorBoard logs (train loss, learning rate, validation recall)

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

import json
import os
import time
import warnings

from sare_tf.training.config import TrainConfig

SUMMARY_FILE = "summary.json"
BEST_MODEL_FILE = "best.keras"
LAST_MODEL_FILE = "last.keras"
BACKUP_DIR = "backup"


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite; training was stopped (the summary says where)."""


def train(config: TrainConfig, train_data=None, val_data=None, embedding_model=None) -> dict:
    """Trains an embedding model with hard-negative mining and returns the run summary.

    Args:
        config: the run's settings (`TrainConfig`).
        train_data: a `GeoDataset` to use instead of loading `config.dataset`.
        val_data: a `GeoDataset` to use instead of loading `config.val_dataset`.
        embedding_model: a model to train instead of building one from the config (it keeps
            the dtype policy it was built with; it must not be inside another strategy scope).

    Returns:
        The summary dict (also in `config.out/summary.json`): "status", "config", "datasets",
        "precision", "strategy", "epochs" (per-epoch loss, learning rate, validation recall,
        timings), "best", "mining", "timings", "paths".

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (summary status "diverged").
        ValueError / FileNotFoundError: bad settings or data, with the value or file at fault.

    Example:
        >>> summary = train(TrainConfig(dataset="pitts30k_train.mat",
        ...                             val_dataset="pitts30k_val.mat",
        ...                             weights="imagenet", out="runs/pitts30k_sare_joint"))
        >>> summary["best"]["val_recall@5"]
    """
    import keras

    previous_policy = keras.config.dtype_policy().name
    try:
        return _train(config, train_data, val_data, embedding_model)
    finally:
        # In-process callers (the demo, notebooks) get their global policy back.
        keras.config.set_dtype_policy(previous_policy)


def make_optimizer(config: TrainConfig):
    """SGD with momentum and decoupled weight decay (the paper), or AdamW."""
    import keras

    if config.optimizer == "adam":
        return keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(
        learning_rate=config.lr, momentum=config.momentum, weight_decay=config.weight_decay or None
    )


def make_strategy(name: str):
    """The `tf.distribute` strategy for "none", "mirrored" or "multiworker".

    "mirrored" replicates over every local GPU, or, without GPUs, over every logical CPU
    device (one unless `tf.config.set_logical_device_configuration` split the CPU, as the
    tests do). "multiworker" reads the cluster from the `TF_CONFIG` environment variable.
    """
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"Unknown strategy. Expected 'none', 'mirrored' or 'multiworker'. Received: {name!r}"
    )


def is_chief(strategy) -> bool:
    """True on the worker that writes files (every single-worker strategy; task 0 / chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def is_multiworker(strategy) -> bool:
    """True when `strategy` spans more than one worker (MultiWorkerMirroredStrategy + TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


def backup_exists(out_dir) -> bool:
    """True when `out_dir` holds an unfinished run's `BackupAndRestore` state."""
    backup = os.path.join(os.fspath(out_dir), BACKUP_DIR)
    return any(
        os.path.exists(os.path.join(backup, name))
        for name in ("latest.weights.h5", "latest.weights.h5.bkp")
    )


def _load_datasets(config, train_data, val_data):
    from sare_tf.data import GeoDataset

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


def _restore_backup(tuple_model, backup_dir: str) -> tuple[int, int]:
    """Loads the backup weights now (before the first mining).

    Returns `(epoch, batch)` as `BackupAndRestore` recorded them: the epoch to resume and
    the batch within it.

    `BackupAndRestore` writes its weights and metadata files in place. A run killed while
    writing them leaves one unreadable; the previous pair (`.bkp`, kept by
    `double_checkpoint=True`) is then copied over it, so that the callback's own restore in
    `fit` loads the same, intact state.
    """
    import shutil

    weights = os.path.join(backup_dir, "latest.weights.h5")
    metadata = os.path.join(backup_dir, "training_metadata.json")
    for suffix in ("", ".bkp"):
        try:
            with open(metadata + suffix) as handle:
                recorded = json.load(handle)
            position = int(recorded["epoch"]), int(recorded.get("batch") or 0)
            tuple_model.load_weights(weights + suffix)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if suffix:
            shutil.copyfile(weights + suffix, weights)
            shutil.copyfile(metadata + suffix, metadata)
        return position
    raise ValueError(
        f"The backup in {backup_dir} cannot be read (weights or metadata damaged). Delete the "
        "folder to start the run over."
    )


def _check_batch_fits_replicas(batch_size: int, num_replicas: int, train_data) -> None:
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


def _check_same_backup_position(strategy, position: tuple[int, int], out: str) -> None:
    """Stops every worker with the same error unless all resume from the same point.

    Each worker resumes from its own backup (the chief's in `out/backup`, the others' in
    `out/worker_<id>/backup`), written at the same steps. A run killed while one worker was
    writing leaves that worker with its previous backup (or none): resuming from different
    points would give the workers different weights, or different numbers of steps, and the
    first to finish would leave the others waiting for it forever.

    Args:
        strategy: the MultiWorkerMirroredStrategy (this is a collective: all workers call it).
        position: this worker's backup `(epoch, batch)`, `(-1, -1)` without a backup.
        out: this worker's run folder, for the message.
    """
    from sare_tf.training.multiworker import values_of_all_workers

    positions = values_of_all_workers(strategy, position)
    if len(set(positions)) > 1:
        described = ", ".join(
            "none" if p[0] < 0 else f"epoch {p[0]} batch {p[1]}" for p in positions
        )
        raise ValueError(
            "The workers cannot resume together: their backups are at different points "
            f"(one per replica: {described}; this worker's is {os.path.join(out, BACKUP_DIR)}). "
            "Delete every worker's backup folder to start the run over."
        )


def _new_summary(config, train_data, val_data, precision, strategy) -> dict:
    return {
        "status": "running",
        "config": config.to_dict(),
        "datasets": {
            "train": train_data.summary(),
            "val": None if val_data is None else val_data.summary(),
        },
        "precision": precision,
        "strategy": {"name": config.strategy, "num_replicas": strategy.num_replicas_in_sync},
        "epochs": [],
        "best": None,
        "mining": {"refreshes": 0, "seconds": 0.0},
        "timings": {},
        "paths": {
            "summary": SUMMARY_FILE,
            "best_model": BEST_MODEL_FILE,
            "last_model": LAST_MODEL_FILE,
            "backup": BACKUP_DIR,
        },
    }


def _train(config: TrainConfig, train_data, val_data, embedding_model) -> dict:
    import keras

    from sare_tf.data.tuples import MiningState, make_tuple_dataset
    from sare_tf.losses import get_loss
    from sare_tf.mining import HardNegativeMining
    from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer
    from sare_tf.precision import set_precision
    from sare_tf.training.callbacks import (
        BestModelCheckpoint,
        NaNGuard,
        RunSummary,
        TensorBoardScalars,
        ValidationRecall,
        halving_schedule,
    )
    from sare_tf.training.multiworker import broadcast_from_chief, prepare_multiworker_fit

    start_total = time.perf_counter()
    timings = {}
    train_data, val_data = _load_datasets(config, train_data, val_data)
    loss = get_loss(config.loss)
    precision = (
        set_precision(config.precision, force=config.force_precision)
        if embedding_model is None
        else keras.config.dtype_policy().name
    )
    strategy = make_strategy(config.strategy)
    multiworker = is_multiworker(strategy)
    # Each replica trains on batch_size / replicas tuples of every batch. The incomplete last
    # batch of a pass is dropped: it could leave a replica with no tuple, and TensorFlow
    # fails on an empty batch (and all workers must run the same number of steps).
    drop_remainder = strategy.num_replicas_in_sync > 1
    if drop_remainder:
        _check_batch_fits_replicas(config.batch_size, strategy.num_replicas_in_sync, train_data)
    out = os.path.abspath(config.out)
    if not is_chief(strategy):
        # Other workers run the same program; their files must not collide with the chief's.
        out = os.path.join(out, f"worker_{strategy.cluster_resolver.task_id}")
    os.makedirs(out, exist_ok=True)
    backup_dir = os.path.join(out, BACKUP_DIR)
    summary_path = os.path.join(out, SUMMARY_FILE)
    resuming = backup_exists(out)

    with strategy.scope():
        if embedding_model is None:
            if config.initial_model:
                if not os.path.isfile(config.initial_model):
                    raise FileNotFoundError(f"Initial model not found: {config.initial_model}")
                embedding_model = keras.models.load_model(config.initial_model)
            else:
                embedding_model = build_embedding_model(
                    config.backbone,
                    num_clusters=config.num_clusters,
                    weights=config.weights,
                    trainable_from=config.trainable_from,
                )
        tuple_model = build_tuple_model(embedding_model, config.num_negatives)
        optimizer = make_optimizer(config)
        tuple_model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
        # Now, in the scope, alike on every worker (creating a variable is a collective
        # under MultiWorkerMirroredStrategy); a resumed run loads its state into it.
        tuple_model.optimizer.build(tuple_model.trainable_variables)

    position = _restore_backup(tuple_model, backup_dir) if resuming else (-1, -1)
    resume_epoch = max(position[0], 0)
    if multiworker:
        _check_same_backup_position(strategy, position, out)
    if resuming:
        print(f"Resuming the run in {out} from its backup (epoch {resume_epoch + 1}).")
    elif not netvlad_layer(embedding_model).is_initialized:
        from sare_tf.cluster_init import initialize_netvlad

        start = time.perf_counter()
        initialize_netvlad(
            embedding_model,
            train_data.db_image_paths(),
            config.image_size,
            descriptors_per_image=config.descriptors_per_image,
            max_images=config.cluster_images,
            batch_size=config.eval_batch_size,
            seed=config.seed,
            verbose=bool(config.verbose),
        )
        timings["cluster_init_seconds"] = round(time.perf_counter() - start, 3)

    if multiworker:
        # Cluster init (or a loaded model) was set by each worker on its own copy.
        broadcast_from_chief(strategy, embedding_model.weights)

    summary = _new_summary(config, train_data, val_data, precision, strategy)
    if resuming and os.path.exists(summary_path):
        with open(summary_path) as handle:
            previous = json.load(handle)
        for key in ("epochs", "best", "resumed", "initial_validation"):
            if previous.get(key) is not None:
                summary[key] = previous[key]
        summary["mining"] = previous.get("mining", summary["mining"])
        timings = {**previous.get("timings", {}), **timings}
    summary["timings"] = timings
    summary["out_dir"] = out  # this worker's folder (out/worker_<id> on a non-chief worker)

    # The mining state lives outside the strategy scope: tf.data reads it on the host.
    state = MiningState(train_data.num_queries, config.num_negatives, num_db=train_data.num_db)
    dataset = make_tuple_dataset(
        train_data,
        state,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=config.seed,
        drop_remainder=drop_remainder,
    )
    if config.steps_per_epoch:
        dataset = dataset.repeat()
    if multiworker:
        prepare_multiworker_fit(tuple_model, dataset.element_spec)
    if resume_epoch:
        # Pass e is shuffled with seed (seed, e): a resumed run continues the uninterrupted
        # run's sequence of query orders instead of replaying the first one.
        state.epoch.assign(resume_epoch)
    mining = HardNegativeMining(
        train_data,
        state,
        config.image_size,
        tuples_per_batch=config.batch_size,
        refresh_every=config.refresh_every,
        num_candidates=config.num_candidates,
        mode=config.mining_mode,
        partial_db_size=config.partial_db_size,
        grow_with_lr=config.mining_grow_with_lr,
        initial_lr=config.lr,
        embedding_model=embedding_model,
        batch_size=config.eval_batch_size,
        seed=config.seed + 1000 * resume_epoch,
        verbose=config.verbose,
        pipeline_seed=config.seed,
        mine_on_train_begin=False,
        drop_remainder=drop_remainder,
    )
    # Mine before fit: a distributed fit peeks at one batch before any callback runs.
    mining.set_model(tuple_model)
    start = time.perf_counter()
    mining.refresh(full=True)
    timings["initial_mining_seconds"] = round(time.perf_counter() - start, 3)

    validation = None
    if val_data is not None:
        validation = ValidationRecall(
            val_data,
            config.image_size,
            embedding_model=embedding_model,
            batch_size=config.eval_batch_size,
            every=config.val_every,
            verbose=config.verbose,
        )
        validation.set_model(tuple_model)
        if config.validate_before_training and "initial_validation" not in summary:
            start = time.perf_counter()
            summary["initial_validation"] = validation.evaluate()
            timings["initial_validation_seconds"] = round(time.perf_counter() - start, 3)

    best = summary.get("best") or {}
    checkpoint = BestModelCheckpoint(
        os.path.join(out, BEST_MODEL_FILE),
        embedding_model=embedding_model,
        best=best.get("val_recall@5", float("-inf")),
        best_epoch=best.get("epoch"),
        last_path=os.path.join(out, LAST_MODEL_FILE),
    )
    nan_guard = NaNGuard()
    run_summary = RunSummary(summary_path, summary, mining, validation, checkpoint)
    callbacks = [
        mining,
        keras.callbacks.LearningRateScheduler(halving_schedule(config.lr, config.lr_halve_every)),
        *([validation] if validation is not None else []),
        checkpoint,
        nan_guard,
        keras.callbacks.TerminateOnNaN(),
        run_summary,
    ]
    if config.tensorboard:
        callbacks.append(TensorBoardScalars(os.path.join(out, "tensorboard")))
    # Last, so that the summary and checkpoints of an epoch are on disk before its backup.
    callbacks.append(
        keras.callbacks.BackupAndRestore(
            backup_dir, save_freq=config.backup_every or "epoch", double_checkpoint=True
        )
    )
    run_summary.write()

    start = time.perf_counter()
    with warnings.catch_warnings():
        # Each pass over the tuples ends the epoch by design; Keras warns about it.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        tuple_model.fit(
            dataset,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,  # the tuple pipeline shuffles (seeded, per pass)
        )
    timings["fit_seconds"] = round(time.perf_counter() - start, 3)  # this run (not resumed ones)
    summary["mining"] = {
        "mode": config.mining_mode,
        "refreshes": int(summary["mining"].get("refreshes", 0)) + len(mining.refreshes),
        "seconds": round(
            float(summary["mining"].get("seconds", 0.0))
            + sum(r["seconds"] for r in mining.refreshes),
            3,
        ),
    }
    timings["total_seconds"] = round(time.perf_counter() - start_total, 3)
    summary["timings"] = timings
    if nan_guard.failure is not None:
        failure = nan_guard.failure
        summary["status"] = "diverged"
        summary["failure"] = failure
        run_summary.write()
        best_text = (
            f"the best model so far is {os.path.join(out, BEST_MODEL_FILE)}"
            if checkpoint.best_epoch
            else "no checkpoint was written"
        )
        precision_hint = "" if precision == "float32" else f", precision float32 (was {precision})"
        raise TrainingDivergedError(
            f"Training stopped: the loss became {failure['loss']} at epoch {failure['epoch']}, "
            f"batch {failure['batch']} (keras.callbacks.TerminateOnNaN); {best_text}; summary: "
            f"{summary_path}. Try a lower learning rate (lr={config.lr}){precision_hint}, or "
            "check the training images."
        )
    summary["status"] = "completed"
    run_summary.write()
    return summary
