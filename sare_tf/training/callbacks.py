"""Callbacks of the fit recipe: validation Recall@N, best-by-Recall@5 checkpoint, the run
summary, the learning-rate halving schedule and a NaN guard."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from sare_tf.atomic import save_model_atomic, write_json_atomic
from sare_tf.encoding import encode, inference_function
from sare_tf.evaluation import evaluate_dataset
from sare_tf.models import embedding_of
from sare_tf.training.config import VALIDATION_NS

logger = logging.getLogger(__name__)


def halving_schedule(initial_lr: float, halve_every: int):
    """`lr(epoch) = initial_lr * 0.5 ** (epoch // halve_every)` (epochs counted from 0).

    Args:
        initial_lr: learning rate of the first epochs (paper: 1e-3).
        halve_every: epochs between halvings (paper: 5); 0 keeps the rate constant.

    Returns:
        A function `(epoch, lr) -> lr` for `keras.callbacks.LearningRateScheduler`. It depends
        on the epoch only, so a resumed run gets the same rate as an uninterrupted one.
    """
    if not initial_lr > 0:
        raise ValueError(f"`initial_lr` must be positive. Received: initial_lr={initial_lr}")
    if halve_every < 0:
        raise ValueError(f"`halve_every` must be >= 0. Received: halve_every={halve_every}")

    def schedule(epoch, lr=None):
        if halve_every == 0:
            return float(initial_lr)
        return float(initial_lr * 0.5 ** (epoch // halve_every))

    return schedule


class ValidationRecall(keras.callbacks.Callback):
    """Adds validation Recall@N to the epoch logs (`val_recall@1`, `val_recall@5`, ...).

    Later callbacks (checkpoint, TensorBoard, History, the progress bar) see the values.

    Args:
        dataset: the validation `GeoDataset`.
        image_size: `(height, width)` images are resized to.
        embedding_model: image -> descriptor model; default found in the model being trained.
        ns: the N to report.
        batch_size: images per encoding batch.
        every: evaluate every this many epochs (and always after the last one).
        verbose: progress bars.

    Attributes:
        seconds: wall time of each evaluation, by epoch index.
    """

    def __init__(
        self,
        dataset,
        image_size,
        embedding_model=None,
        ns=VALIDATION_NS,
        batch_size: int = 16,
        every: int = 1,
        verbose: int = 1,
    ):
        super().__init__()
        self.dataset = dataset
        self.image_size = tuple(image_size)
        self.embedding_model = embedding_model
        self.ns = tuple(int(n) for n in ns)
        self.batch_size = batch_size
        self.every = max(1, int(every))
        self.verbose = verbose
        self.seconds: dict[int, float] = {}
        self._predict = None

    def evaluate(self) -> dict[str, float]:
        """`{"recall@N": fraction}` of the current weights."""

        if self._predict is None:
            self._predict = inference_function(self.embedding_model or embedding_of(self.model))
        return evaluate_dataset(
            self._predict,
            self.dataset,
            self.image_size,
            ns=self.ns,
            batch_size=self.batch_size,
            progress=bool(self.verbose),
        )

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        if not np.isfinite((logs or {}).get("loss", 0.0)):
            return  # diverged: TerminateOnNaN is stopping the run, the weights are garbage
        start = time.perf_counter()
        metrics = self.evaluate()
        self.seconds[epoch] = time.perf_counter() - start
        if logs is not None:
            for n in self.ns:
                logs[f"val_recall@{n}"] = float(metrics[f"recall@{n}"])


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the embedding model to a `.keras` file whenever the monitored value improves.

    The file is written atomically (temporary file, then rename): a run killed while saving
    keeps the previous best model.

    Args:
        path: the `.keras` file.
        monitor: the log key to maximise.
        embedding_model: what to save; default the embedding model inside the trained model.
        best: the value to beat (a resumed run passes the best it had reached).
        last_path: also save the model after every epoch here (None: no).
        collapse: the run's `CollapseDetector` (it runs first): a collapsed epoch is never the
            best, an epoch whose descriptors kept their spread beats one whose descriptors
            contracted; after a recovery, `last_path` holds the restored weights.
        best_spread: whether the best of a resumed run had spread descriptors.

    Attributes:
        best: the best value so far; `best_epoch` its epoch (1-based, None before any; 0 for
            the weights from the start of training that a collapse recovery restored).
    """

    def __init__(
        self,
        path,
        monitor: str = "val_recall@5",
        embedding_model=None,
        best: float = -math.inf,
        best_epoch: int | None = None,
        last_path=None,
        collapse=None,
        best_spread: bool = True,
    ):
        super().__init__()
        self.path = os.fspath(path)
        self.monitor = monitor
        self.embedding_model = embedding_model
        self.best = best
        self.best_epoch = best_epoch
        self.last_path = None if last_path is None else os.fspath(last_path)
        self.collapse = collapse
        # Before any best, any epoch beats the start value.
        self.best_spread = best_epoch is not None and best_spread

    def on_epoch_end(self, epoch, logs=None):

        model = self.embedding_model or embedding_of(self.model)
        value = (logs or {}).get(self.monitor)
        collapsed = self.collapse is not None and self.collapse.collapsed_at(epoch)
        # An epoch whose descriptors kept their spread beats any that lost it; then the value.
        spread = self.collapse is None or not self.collapse.contracted_at(epoch)
        finite = value is not None and np.isfinite(value)
        if not collapsed and finite and (spread, value) > (self.best_spread, self.best):
            save_model_atomic(model, self.path)
            self.best, self.best_epoch, self.best_spread = float(value), epoch + 1, spread
        elif collapsed and self.best_epoch is None:
            # The detector restored weights from before the collapse: until an epoch beats
            # them, they are the best model there is (its validation value unknown).
            save_model_atomic(model, self.path)
            self.best_epoch = self.collapse.collapsed[-1].get("restored_epoch", 0)
            self.best_spread = True  # restored weights are spread ones
        if self.last_path is not None and np.isfinite((logs or {}).get("loss", 0.0)):
            save_model_atomic(model, self.last_path)


class NaNGuard(keras.callbacks.Callback):
    """Records where the loss stopped being finite (`keras.callbacks.TerminateOnNaN` stops).

    Attributes:
        failure: None, or `{"epoch": e (1-based), "batch": b, "loss": value}`.
    """

    def __init__(self):
        super().__init__()
        self.failure = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.failure is None and loss is not None and not np.isfinite(loss):
            self.failure = {"epoch": self._epoch + 1, "batch": int(batch), "loss": str(loss)}


class RunSummary(keras.callbacks.Callback):
    """Keeps the JSON run summary current: written atomically after every epoch.

    Args:
        path: the JSON file.
        summary: the dict to keep (config, dataset info, timings ...); its "epochs" list gets
            one record per epoch. On a resumed run, records of epochs that are run again are
            dropped when training restarts.
        mining: the `HardNegativeMining` callback, for per-epoch mining time.
        validation: the `ValidationRecall` callback, for per-epoch validation time.
        checkpoint: the `BestModelCheckpoint`, for the best value so far.
        collapse: the `CollapseDetector`, whose collapsed epochs go to "collapse".
    """

    def __init__(
        self, path, summary: dict, mining=None, validation=None, checkpoint=None, collapse=None
    ):
        super().__init__()
        self.path = os.fspath(path)
        self.summary = summary
        self.summary.setdefault("epochs", [])
        self.mining = mining
        self.validation = validation
        self.checkpoint = checkpoint
        self.collapse = collapse
        self._started = False
        self._epoch_start = 0.0
        self._refreshes_at_start = 0

    def write(self) -> None:
        write_json_atomic(self.path, self.summary)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            kept = [r for r in self.summary["epochs"] if r["epoch"] <= epoch]
            if len(kept) != len(self.summary["epochs"]) or epoch > 0:
                self.summary.setdefault("resumed", []).append(
                    {"at_epoch": epoch + 1, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
                )
            self.summary["epochs"] = kept
        self._epoch_start = time.perf_counter()
        self._refreshes_at_start = len(self.mining.refreshes) if self.mining else 0

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        for key, value in (logs or {}).items():
            record[key] = float(value)
        record["seconds"] = round(time.perf_counter() - self._epoch_start, 3)
        if self.mining is not None:
            refreshes = self.mining.refreshes[self._refreshes_at_start :]
            record["mining_refreshes"] = len(refreshes)
            record["mining_seconds"] = round(sum(r["seconds"] for r in refreshes), 3)
        if self.validation is not None and epoch in self.validation.seconds:
            record["validation_seconds"] = round(self.validation.seconds[epoch], 3)
        self.summary["epochs"].append(record)
        if self.checkpoint is not None and self.checkpoint.best_epoch is not None:
            best = self.checkpoint.best
            self.summary["best"] = {
                "epoch": self.checkpoint.best_epoch,
                "monitor": self.checkpoint.monitor,
                self.checkpoint.monitor: best if math.isfinite(best) else None,
                "spread": self.checkpoint.best_spread,
                "path": os.path.basename(self.checkpoint.path),
            }
        if self.collapse is not None and self.collapse.collapsed:
            # The detector holds the resumed run's records too.
            self.summary["collapse"] = self.collapse.collapsed
        self.write()


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes the epoch logs as TensorBoard scalars, without needing the tensorboard package.

    TensorFlow 2.21 no longer installs `tensorboard`, and `keras.callbacks.TensorBoard` (through
    `tf.summary.scalar`) fails without it. This writes the same event files with the core op
    `tf.summary.write` and the scalar plugin's metadata: keys starting with `val_` go to
    `log_dir/validation` (without the prefix), the others to `log_dir/train`, as Keras does.

    Args:
        log_dir: the run's TensorBoard folder.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers = {}

    def _writer(self, name: str):

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(
                    f"epoch_{tag}",
                    tf.constant(float(value), tf.float32),
                    step=epoch,
                    metadata=metadata.SerializeToString(),
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def uniform_loss(loss, num_negatives: int, dim: int = 8) -> float:
    """The loss when every descriptor of a tuple is the same point (collapsed embedding).

    ln(1 + N) for joint SARE, ln 2 for independent SARE, the margin for the triplet loss,
    0.5 * margin^2 for the contrastive loss: computed from `loss` itself, not from a table.
    """
    tuples = np.zeros((1, 2 + num_negatives, dim), np.float32)
    tuples[..., 0] = 1.0  # unit-norm, like real descriptors
    return float(keras.ops.convert_to_numpy(loss(None, keras.ops.convert_to_tensor(tuples))))


def mean_pairwise_distance(descriptors: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows (float64)."""
    x = np.asarray(descriptors, np.float64)
    if len(x) < 2:
        return float("nan")
    squared = np.sum(x**2, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * x @ x.T, 0.0)
    upper = np.triu_indices(len(x), k=1)
    return float(np.mean(np.sqrt(d2[upper])))


class CollapseDetector(keras.callbacks.Callback):
    """Detects an embedding collapse (every descriptor at nearly one point) and recovers from it.

    A collapsed embedding gives a finite loss (the NaN guard cannot see it), near the loss's
    *uniform value* (`uniform_loss`: ln(1 + N) for joint SARE), where its gradient vanishes:
    training does not leave it by itself, and the loss alone does not show it (a high rate
    makes it jump around that value). So at every epoch end the detector encodes `probe_paths`
    (fixed database images; 32 images cost little beside an epoch) and measures their mean
    pairwise descriptor distance (unit-norm descriptors: about 1.4 when spread, 0 when
    collapsed). The epoch is collapsed when that distance fell below `deep_distance` times its
    value at the start of training, or below `relative_distance` times it (and below
    `max_distance`) while the epoch's loss is within `loss_tolerance` of the uniform value.
    (Randomly initialised backbones often contract to a quarter of their starting spread in
    their first epoch while the loss falls: that is learning, not a collapse.) Then, with
    `recover`:

    1. the weights of the last epoch end whose probes were not contracted (or of the start) are
       restored, and the optimizer's moments are cleared (they point into the collapse);
    2. the learning rate is multiplied by `lr_factor` from the next epoch on (`lr_scale`, which
       the run's schedule multiplies in);
    3. a warning says so, and the record goes to `summary.json` ("collapse");
    4. after `max_recoveries` collapses the run stops early, saying what was tried.

    The best checkpoint never takes a collapsed epoch (`BestModelCheckpoint(collapse=...)`).

    Args:
        uniform_value: the loss's value on a collapsed embedding (`uniform_loss`).
        probe_paths: images encoded at every epoch end.
        image_size: their `(height, width)`.
        embedding_model: the image -> descriptor model being trained.
        learning_rate: the run's initial learning rate, for the messages.
        relative_distance: the share of the starting distance below which the probes count as
            collapsed when the loss sits at its uniform value.
        max_distance: probes farther apart than this never count as collapsed.
        deep_distance: the share of the starting distance below which the probes count as
            collapsed whatever the loss.
        loss_tolerance: how close (relative) to the uniform value the loss must be to count as
            sitting at it.
        batch_size: images per encoding batch.
        recover: restore and lower the learning rate (False: only warn and record).
        lr_factor: what each recovery multiplies the learning rate by.
        max_recoveries: collapses after which the run stops.
        previous: the collapse records of the run this one resumes.

    Attributes:
        collapsed: one record per collapsed epoch (`epoch`, `loss`, `uniform_loss`,
            `mean_pairwise_distance`, and with recovery `restored_epoch`, `lr_scale`).
        lr_scale: the product of the recoveries' factors so far (1.0 before any).
        stopped: the message of an early stop, or None.
    """

    def __init__(
        self,
        uniform_value: float,
        probe_paths,
        image_size,
        embedding_model,
        learning_rate: float | None = None,
        relative_distance: float = 0.4,
        max_distance: float = 0.5,
        deep_distance: float = 0.1,
        loss_tolerance: float = 0.02,
        batch_size: int = 16,
        recover: bool = True,
        lr_factor: float = 0.1,
        max_recoveries: int = 3,
        previous=None,
    ):
        super().__init__()
        self.uniform_value = float(uniform_value)
        self.probe_paths = list(probe_paths)
        self.image_size = image_size
        self.embedding_model = embedding_model
        self.learning_rate = learning_rate
        self.relative_distance = relative_distance
        self.max_distance = max_distance
        self.deep_distance = deep_distance
        self.loss_tolerance = loss_tolerance
        self.batch_size = batch_size
        self.recover = recover
        self.lr_factor = lr_factor
        self.max_recoveries = max_recoveries
        # A resumed run goes on at the rate its recoveries had reached.
        self.collapsed: list[dict] = [dict(record) for record in previous or []]
        self.lr_scale = min((r.get("lr_scale", 1.0) for r in self.collapsed), default=1.0)
        self.stopped: str | None = None
        self.contracted_epochs: set[int] = set()
        self.start_distance = float("nan")
        self._good_weights = None
        self._good_epoch = 0

    def _snapshot(self) -> list:
        # Every weight of the trained model (a classifier head too), trainable or not.
        return [variable.numpy() for variable in self.model.weights]

    def on_train_begin(self, logs=None):
        self._good_weights = self._snapshot()
        if self.probe_paths:
            self.start_distance = self._probe_distance()

    def is_collapsed(self, distance: float, loss: float) -> bool:
        """Whether probes `distance` apart after an epoch of mean loss `loss` are collapsed."""
        if distance < self.deep_distance * self.start_distance:
            return True
        at_uniform = abs(loss - self.uniform_value) <= self.loss_tolerance * self.uniform_value
        return self._contracted(distance) and at_uniform

    def _contracted(self, distance: float) -> bool:
        return distance < min(self.max_distance, self.relative_distance * self.start_distance)

    def collapsed_at(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based, as Keras counts) was found collapsed."""
        return any(record["epoch"] == epoch + 1 for record in self.collapsed)

    def contracted_at(self, epoch: int) -> bool:
        """Whether the probes of epoch `epoch` (0-based) had lost most of their spread."""
        return epoch + 1 in self.contracted_epochs

    def _probe_distance(self) -> float:

        descriptors, valid = encode(
            self.embedding_model,
            self.probe_paths,
            image_size=self.image_size,
            batch_size=self.batch_size,
            progress=False,
        )
        return mean_pairwise_distance(descriptors[valid])

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss", float("nan"))
        distance = self._probe_distance() if self.probe_paths else float("nan")
        if self._contracted(distance):
            self.contracted_epochs.add(epoch + 1)
        if not self.is_collapsed(distance, float(loss)):
            if not self._contracted(distance):
                # Only spread weights are worth coming back to.
                self._good_weights = self._snapshot()
                self._good_epoch = epoch + 1
            return
        record = {
            "epoch": epoch + 1,
            "loss": float(loss),
            "uniform_loss": self.uniform_value,
            "mean_pairwise_distance": distance,
            "start_distance": self.start_distance,
        }
        self.collapsed.append(record)
        lr = f" (lr={self.learning_rate:g})" if self.learning_rate else ""
        message = (
            f"Embedding collapse at epoch {epoch + 1}: the mean pairwise descriptor distance of "
            f"{len(self.probe_paths)} probe images fell to {distance:.4f} from {self.start_distance:.4f} "
            f"at the start (every descriptor alike; the loss {float(loss):.4f}, its value for "
            f"identical descriptors {self.uniform_value:.4f}). The likely cause is a too high "
            f"learning rate{lr}."
        )
        if self.recover:
            message += self._recover(epoch, record)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)

    def _recover(self, epoch: int, record: dict) -> str:
        for variable, value in zip(self.model.weights, self._good_weights, strict=True):
            variable.assign(value)
        optimizer = getattr(self.model, "optimizer", None)
        for variable in getattr(optimizer, "variables", []):
            if not variable.path.endswith(("iteration", "iterations", "learning_rate")):
                variable.assign(np.zeros(variable.shape, variable.dtype))
        self.lr_scale *= self.lr_factor
        record.update(restored_epoch=self._good_epoch, lr_scale=self.lr_scale)
        restored = f"epoch {self._good_epoch}" if self._good_epoch else "the start of training"
        if len(self.collapsed) >= self.max_recoveries:
            self.model.stop_training = True
            self.stopped = (
                f"Stopped after {len(self.collapsed)} collapses: each time the weights of the last "
                f"good epoch were restored, the optimizer's moments cleared and the learning rate "
                f"multiplied by {self.lr_factor:g} (now x{self.lr_scale:g}). Train with a lower "
                "--lr, --optimizer sgd, or from a pretrained --initial-model."
            )
            record["stopped"] = True
            return f" Restored the weights of {restored}. {self.stopped}"
        return (
            f" Restored the weights of {restored}, cleared the optimizer's moments and "
            f"multiplied the learning rate by {self.lr_factor:g} (now x{self.lr_scale:g} the "
            "schedule's); training goes on. The best model by validation recall never comes "
            "from a collapsed epoch."
        )
