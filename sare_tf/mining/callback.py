"""The Keras callback that keeps the training tuples hard: re-encode, re-mine, update the state."""

from __future__ import annotations

import dataclasses
import logging
import time

import keras
import numpy as np

from sare_tf.encoding import encode, inference_function
from sare_tf.mining.hard_negatives import NO_INDEX
from sare_tf.mining.policies import FullRefresh, get_policy
from sare_tf.models import embedding_of
from sare_tf.progress import ProgressBar

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MiningSettings:
    """How `HardNegativeMining` mines: one object instead of loose keyword arguments.

    Attributes:
        refresh_every: training queries between refreshes (paper recipe: 1000).
        num_candidates: random negatives sampled per query (paper recipe: 1000).
        policy: "full", "partial" or a `RefreshPolicy`.
        grow_with_lr: lengthen the interval as the learning rate drops.
        initial_lr: the reference learning rate for `grow_with_lr` (default: the optimizer's
            at train begin).
        encode_batch_size: images per encoding batch.
        seed: base seed of the candidate sampling (refresh r uses `seed + r`).
    """

    refresh_every: int = 1000
    num_candidates: int = 1000
    policy: object = "full"
    grow_with_lr: bool = False
    initial_lr: float | None = None
    encode_batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        for name in ("refresh_every", "num_candidates", "encode_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


class HardNegativeMining(keras.callbacks.Callback):
    """Refreshes the mining state of a `TuplePipeline` with the model being trained.

    At the start of training, and then every `refresh_every` training queries (counted as
    batches x the pipeline's tuples per batch, across epochs), the callback encodes images with
    the current embedding model (`sare_tf.encoding.encode`, in the model's dtype policy, e.g.
    bf16), mines new tuples and assigns them to the pipeline's state, which the tuple dataset
    reads at element time. The previous negatives (read back from the state) are the negative
    cache, so the hardest negatives found so far stay candidates.

    Which queries a refresh re-mines, against which database images, is the `policy`'s job
    (`sare_tf.mining.policies`): "full" (every query against the whole database, the paper's
    recipe) or "partial" (the queries the pipeline serves next, against a shared random subset;
    `PartialRefresh(db_size=...)` to size it). The first refresh is always full, so every query
    has a tuple. The pipeline itself says which queries come next
    (`TuplePipeline.queries_served`).

    Interval growth: with `grow_with_lr=True` the interval becomes
    `refresh_every * initial_lr / current_lr` (doubling with each halving of the learning rate):
    descriptors move less when the steps are smaller, so tuples stay hard longer.

    Unreadable images (skipped and counted by the encoder): database images are never chosen
    (`mine_tuples(db_usable=...)`), queries are marked not valid for this refresh.

    Staleness: tf.data prefetches a few batches, so the batches already in flight when a
    refresh lands were built from the previous state. That is a few tuples out of
    `refresh_every`, and harmless: they are still valid tuples, only slightly less hard.

    Args:
        pipeline: the `sare_tf.data.tuples.TuplePipeline` whose state is refreshed (its
            dataset, state, image size and tuples per batch are used).
        settings: a `MiningSettings` (default: the paper's recipe).
        embedding_model: the image -> descriptor model; default: found inside the model being
            trained (`sare_tf.models.embedding_of`).
        verbose: 1 prints each refresh and shows progress bars, 0 is silent.
        mine_on_train_begin: mine in `on_train_begin`. Pass False when calling `refresh()`
            yourself before `fit` (needed with a distribution strategy, whose `fit` reads a
            first batch before any callback runs).
        **overrides: `MiningSettings` fields replacing those of `settings`
            (`HardNegativeMining(pipeline, refresh_every=500)`).

    Attributes:
        refreshes: one record per refresh (queries seen, policy, timings, tuples changed).
        last_query_ids: ids of the queries the last refresh re-mined.

    Example:
        >>> pipeline = TuplePipeline(train, MiningState(train.num_queries, 10), (480, 640))
        >>> mining = HardNegativeMining(pipeline)
        >>> tuple_model.fit(pipeline.tf_dataset(), epochs=30, callbacks=[mining])

    Reference:
        Arandjelovic et al., "NetVLAD", CVPR 2016, sec. 4 and appendix (tuples re-mined every
        1000 queries with 1000 random negatives and the previous hardest); Liu, Li, Dai, SARE,
        ICCV 2019, sec. 5 (same protocol).
    """

    def __init__(
        self,
        pipeline,
        settings: MiningSettings | None = None,
        embedding_model: keras.Model | None = None,
        verbose: int = 1,
        mine_on_train_begin: bool = True,
        **overrides,
    ):
        super().__init__()
        settings = dataclasses.replace(settings or MiningSettings(), **overrides)
        policy = settings.policy
        self.pipeline = pipeline
        self.settings = settings
        self.policy = get_policy(policy)
        self.refresh_every = settings.refresh_every
        self.num_candidates = settings.num_candidates
        self.grow_with_lr = settings.grow_with_lr
        self.initial_lr = settings.initial_lr
        self.embedding_model = embedding_model
        self.encode_batch_size = settings.encode_batch_size
        self.seed = settings.seed
        self.verbose = verbose
        self.mine_on_train_begin = mine_on_train_begin
        self.refreshes: list[dict] = []
        self.last_query_ids = np.zeros(0, dtype=np.int64)
        self.train_positives = self.dataset.train_positives()
        self.non_negatives = self.dataset.non_negatives()
        # Where training is (read by the policies): the pipeline's pass this fit started at,
        # and the batches served since.
        self.first_pass = 0
        self.batches_seen = 0
        self._queries_seen = 0
        self._last_refresh_at = 0
        self._encoder = None
        self._encode_seconds = 0.0

    @property
    def dataset(self):
        return self.pipeline.dataset

    @property
    def state(self):
        return self.pipeline.state

    @property
    def num_negatives(self) -> int:
        return self.state.num_negatives

    # Keras hooks -----------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        # The pipeline's next pass (epoch variable = passes started so far) is the first one
        # this fit consumes; partial refreshes count batches from here.
        self.first_pass = int(keras.ops.convert_to_numpy(self.state.epoch))
        self.batches_seen = 0
        if self.initial_lr is None:
            self.initial_lr = self._current_lr()
        if self.mine_on_train_begin:
            self.refresh(full=True)

    def on_train_batch_end(self, batch, logs=None):
        self.batches_seen += 1
        self._queries_seen += self.pipeline.batch_size
        if self._queries_seen - self._last_refresh_at >= self.current_interval():
            self.refresh()

    # Public API ------------------------------------------------------------------------------

    def current_interval(self) -> int:
        """Training queries between refreshes now (grows as the LR drops with `grow_with_lr`)."""
        if not self.grow_with_lr or not self.initial_lr:
            return self.refresh_every
        lr = self._current_lr()
        if not lr or lr <= 0:
            return self.refresh_every
        return int(round(self.refresh_every * max(1.0, self.initial_lr / lr)))

    def refresh(self, full: bool = False) -> dict:
        """Encodes, mines and assigns now (`full=True`: all queries, whatever the policy)."""
        start = time.perf_counter()
        self._encode_seconds = 0.0
        policy = FullRefresh() if full else self.policy
        before = self._read_state()
        query_ids, (positive_idx, negative_idx, valid) = policy.mine(self, before)
        indices, state_valid = before[0].copy(), before[1].copy()
        indices[query_ids, 0] = np.where(valid, positive_idx, 0)
        # NO_INDEX is never gathered (those queries are not valid), but keep ids in range.
        indices[query_ids, 1:] = np.where(negative_idx == NO_INDEX, 0, negative_idx)
        state_valid[query_ids] = valid
        self.state.assign(indices[:, 0], indices[:, 1:], state_valid)
        changed = np.any(indices[query_ids] != before[0][query_ids], axis=1) & valid
        record = {
            "refresh": len(self.refreshes),
            "queries_seen": self._queries_seen,
            "mode": policy.name,
            "num_queries_mined": int(len(query_ids)),
            "num_valid": int(valid.sum()),
            "changed_fraction": float(changed.sum() / max(int(valid.sum()), 1)),
            "encode_seconds": round(self._encode_seconds, 3),
            "seconds": round(time.perf_counter() - start, 3),
        }
        self.refreshes.append(record)
        self.last_query_ids = query_ids
        self._last_refresh_at = self._queries_seen
        if self.verbose:
            logger.info(
                f"Hard-negative mining {record['refresh']} ({record['mode']}, "
                f"{record['num_queries_mined']} queries): {record['seconds']:.1f} s, "
                f"{100 * record['changed_fraction']:.0f}% of tuples changed"
            )
        return record

    def refresh_seed(self) -> int:
        """The seed of the refresh being made (`seed + refresh number`)."""
        return self.seed + len(self.refreshes)

    def encode(self, paths, dtype, label: str) -> tuple[np.ndarray, np.ndarray]:
        """`(descriptors as dtype, readable mask)` of `paths`, converted chunk by chunk."""

        start = time.perf_counter()
        chunk = 256
        bar = ProgressBar(len(paths), "image", enabled=self.verbose)
        if self.verbose:
            logger.info(f"Mining: encoding {len(paths)} {label} images")
        parts, readable = [], []
        for first in range(0, len(paths), chunk):
            descriptors, ok = encode(
                self._encoder_fn(),
                paths[first : first + chunk],
                image_size=self.pipeline.image_size,
                batch_size=self.encode_batch_size,
                progress=False,
            )
            parts.append(np.asarray(descriptors, dtype=dtype))
            readable.append(ok)
            bar.update(min(first + chunk, len(paths)))
        self._encode_seconds += time.perf_counter() - start
        if not parts:
            return np.zeros((0, 0), dtype), np.zeros(0, bool)
        return np.concatenate(parts), np.concatenate(readable)

    # Internals -------------------------------------------------------------------------------

    def _encoder_fn(self):
        """One traced inference function for the whole run (weights are read at call time)."""
        if self._encoder is None:
            self._encoder = inference_function(self.embedding_model or embedding_of(self.model))
        return self._encoder

    def _read_state(self):
        indices = np.array(keras.ops.convert_to_numpy(self.state.indices), dtype=np.int64)
        valid = np.array(keras.ops.convert_to_numpy(self.state.valid), dtype=bool)
        return indices, valid

    def _current_lr(self):
        optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
        if optimizer is None:
            return None
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
