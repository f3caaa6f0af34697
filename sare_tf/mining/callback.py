"""The Keras callback that keeps the training tuples hard: re-encode, re-mine, update the state."""

from __future__ import annotations

import time

import keras
import numpy as np

from sare_tf.mining.hard_negatives import NO_INDEX, mine_tuples

MODES = ("full", "partial")


class HardNegativeMining(keras.callbacks.Callback):
    """Refreshes the mining state of a tuple pipeline with the model being trained.

    At the start of training, and then every `refresh_every` training queries (counted as
    batches x `tuples_per_batch`, across epochs), the callback encodes images with the current
    embedding model (batched through `sare_tf.evaluation.extract_descriptors`, in the model's
    dtype policy, e.g. bf16), runs `mine_tuples` and assigns the result to `state`, which the
    tuple dataset reads at element time. The previous negatives (read back from the state)
    are the negative cache, so the hardest negatives found so far stay candidates.

    Modes:
        "full": every refresh encodes all training queries and the whole database (the
            paper's recipe).
        "partial": each refresh re-mines only the `refresh_every` queries the pipeline serves
            next: it encodes those queries, their training positives, their current negatives
            and a random subset of `partial_db_size` database images shared by the chunk, whose
            images outside a query's 25 m are all its candidates. About `Q / refresh_every`
            times cheaper per refresh. The first mining is always full, so every query has a
            tuple. "Served next" is known from `pipeline_seed`: the tuple pipeline shuffles pass
            `e` with seed `(pipeline_seed, e)` (`sare_tf.data.tuples.MiningState.epoch`), and
            the callback replays that shuffle at the position reached (batches x
            `tuples_per_batch`); it stays aligned as long as no tuple is dropped for a bad
            image. Without `pipeline_seed`, chunks are taken in turn from a seeded permutation.

    Interval growth: with `grow_with_lr=True` the interval becomes
    `refresh_every * initial_lr / current_lr` (doubling with each halving of the learning rate):
    descriptors move less when the steps are smaller, so tuples stay hard longer.

    Unreadable images (skipped and counted by extraction): database images are never chosen
    (`mine_tuples(db_usable=...)`), queries are marked not valid for this refresh.

    Staleness: tf.data prefetches a few batches, so the batches already in flight when a
    refresh lands were built from the previous state. That is a few tuples out of
    `refresh_every`, and harmless: they are still valid tuples, only slightly less hard.

    Args:
        dataset: the training `GeoDataset`.
        state: the pipeline's mining state (`sare_tf.data.tuples.MiningState`: tf.Variables
            `indices [Q, 1+N]` and `valid [Q]`, method `assign(positive_idx, negative_idx, valid)`).
        image_size: `(height, width)` images are resized to for encoding (the training size).
        tuples_per_batch: tuples per training batch, to count queries from batches.
        refresh_every: training queries between refreshes (paper recipe: 1000).
        num_candidates: random negatives sampled per query (paper recipe: 1000).
        mode: "full" or "partial".
        partial_db_size: database images encoded per partial refresh (default `num_candidates`).
        grow_with_lr: lengthen the interval as the learning rate drops.
        initial_lr: the reference learning rate for `grow_with_lr` (default: the optimizer's
            at train begin).
        embedding_model: the image -> descriptor model; default: found inside the model being
            trained (`sare_tf.models.embedding_of`).
        batch_size: images per encoding batch.
        seed: base seed of the candidate sampling (refresh r uses `seed + r`).
        verbose: 1 prints each refresh and shows progress bars, 0 is silent.
        pipeline_seed: the `seed` given to `make_tuple_dataset` (with `shuffle=True`), so that
            partial refreshes pick the queries served next (see Modes).
        mine_on_train_begin: mine in `on_train_begin`. Pass False when calling `refresh()`
            yourself before `fit` (needed with a distribution strategy, whose `fit` reads a
            first batch before any callback runs).
        drop_remainder: the tuple pipeline drops an incomplete last batch
            (`make_tuple_dataset(drop_remainder=True)`), so a pass serves
            `floor(valid / tuples_per_batch)` batches; partial refreshes follow that.

    Attributes:
        refreshes: one record per refresh (queries seen, mode, timings, how many tuples changed).
        last_query_ids: ids of the queries the last refresh re-mined.

    Example:
        >>> state = MiningState(train.num_queries, num_negatives=10)
        >>> ds = make_tuple_dataset(train, state, image_size=(480, 640), batch_size=4)
        >>> mining = HardNegativeMining(train, state, (480, 640), tuples_per_batch=4)
        >>> tuple_model.fit(ds, epochs=30, callbacks=[mining])

    Reference:
        Arandjelovic et al., "NetVLAD", CVPR 2016, sec. 4 and appendix (tuples re-mined every
        1000 queries with 1000 random negatives and the previous hardest); Liu, Li, Dai, SARE,
        ICCV 2019, sec. 5 (same protocol).
    """

    def __init__(
        self,
        dataset,
        state,
        image_size,
        tuples_per_batch: int = 4,
        refresh_every: int = 1000,
        num_candidates: int = 1000,
        mode: str = "full",
        partial_db_size: int | None = None,
        grow_with_lr: bool = False,
        initial_lr: float | None = None,
        embedding_model: keras.Model | None = None,
        batch_size: int = 16,
        seed: int = 0,
        verbose: int = 1,
        pipeline_seed: int | None = None,
        mine_on_train_begin: bool = True,
        drop_remainder: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(
                f"Unknown mining mode. Expected one of {MODES}. Received: mode={mode!r}"
            )
        for name, value in (
            ("tuples_per_batch", tuples_per_batch),
            ("refresh_every", refresh_every),
            ("num_candidates", num_candidates),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        num_rows, width = (int(v) for v in state.indices.shape)
        if num_rows != dataset.num_queries:
            raise ValueError(
                f"The mining state has {num_rows} rows but the dataset {dataset.name!r} has "
                f"{dataset.num_queries} queries."
            )
        self.dataset = dataset
        self.state = state
        self.image_size = tuple(int(v) for v in image_size)
        self.num_negatives = width - 1
        self.tuples_per_batch = tuples_per_batch
        self.refresh_every = refresh_every
        self.num_candidates = num_candidates
        self.mode = mode
        self.partial_db_size = partial_db_size or num_candidates
        self.grow_with_lr = grow_with_lr
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self.seed = seed
        self.verbose = verbose
        self.refreshes: list[dict] = []
        self.last_query_ids = np.zeros(0, dtype=np.int64)
        self._train_positives = dataset.train_positives()
        self._non_negatives = dataset.non_negatives()
        self._queries_seen = 0
        self._last_refresh_at = 0
        self.pipeline_seed = pipeline_seed
        self.mine_on_train_begin = mine_on_train_begin
        self.drop_remainder = drop_remainder
        self._first_pass = 0
        self._batches_seen = 0
        self._initial_lr = initial_lr
        self._encoder = None
        rng = np.random.default_rng(seed)
        trainable = np.flatnonzero([len(p) > 0 for p in self._train_positives])
        self._partial_order = rng.permutation(trainable)
        self._partial_cursor = 0

    # Keras hooks -----------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        # The pipeline's next pass (epoch variable = passes started so far) is the first one
        # this fit consumes; partial refreshes count batches from here.
        self._first_pass = int(keras.ops.convert_to_numpy(getattr(self.state, "epoch", 0)))
        self._batches_seen = 0
        if self._initial_lr is None:
            self._initial_lr = self._current_lr()
        if self.mine_on_train_begin:
            self.refresh(full=True)

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        self._queries_seen += self.tuples_per_batch
        if self._queries_seen - self._last_refresh_at >= self.current_interval():
            self.refresh(full=self.mode == "full")

    # Public API ------------------------------------------------------------------------------

    def current_interval(self) -> int:
        """Training queries between refreshes now (grows as the LR drops with `grow_with_lr`)."""
        if not self.grow_with_lr or not self._initial_lr:
            return self.refresh_every
        lr = self._current_lr()
        if not lr or lr <= 0:
            return self.refresh_every
        return int(round(self.refresh_every * max(1.0, self._initial_lr / lr)))

    def refresh(self, full: bool = True) -> dict:
        """Encodes, mines and assigns now; returns the record appended to `refreshes`."""
        start = time.perf_counter()
        before = self._read_state()
        if full:
            query_ids = np.arange(self.dataset.num_queries)
            encode_seconds, (positive_idx, negative_idx, valid) = self._mine_full(before)
        else:
            query_ids = self._next_partial_chunk()
            encode_seconds, (positive_idx, negative_idx, valid) = self._mine_partial(
                query_ids, before
            )
        indices, state_valid = before
        indices = indices.copy()
        state_valid = state_valid.copy()
        indices[query_ids, 0] = np.where(valid, positive_idx, 0)
        # NO_INDEX is never gathered (those queries are not valid), but keep ids in range.
        indices[query_ids, 1:] = np.where(negative_idx == NO_INDEX, 0, negative_idx)
        state_valid[query_ids] = valid
        self.state.assign(indices[:, 0], indices[:, 1:], state_valid)
        changed = np.any(indices[query_ids] != before[0][query_ids], axis=1) & valid
        record = {
            "refresh": len(self.refreshes),
            "queries_seen": self._queries_seen,
            "mode": "full" if full else "partial",
            "num_queries_mined": int(len(query_ids)),
            "num_valid": int(valid.sum()),
            "changed_fraction": float(changed.sum() / max(int(valid.sum()), 1)),
            "encode_seconds": round(encode_seconds, 3),
            "seconds": round(time.perf_counter() - start, 3),
        }
        self.refreshes.append(record)
        self.last_query_ids = query_ids
        self._last_refresh_at = self._queries_seen
        if self.verbose:
            print(
                f"Hard-negative mining {record['refresh']} ({record['mode']}, "
                f"{record['num_queries_mined']} queries): {record['seconds']:.1f} s, "
                f"{100 * record['changed_fraction']:.0f}% of tuples changed"
            )
        return record

    # Internals -------------------------------------------------------------------------------

    def _mine_full(self, before):
        start = time.perf_counter()
        # Queries in float16 halve the largest array (32768-d: 7,416 x 64 KB); the database
        # stays float32 (mine_tuples reads its rows in place).
        query_desc, query_ok = self._encode(self.dataset.query_image_paths(), np.float16, "queries")
        db_desc, db_ok = self._encode(self.dataset.db_image_paths(), np.float32, "database")
        encode_seconds = time.perf_counter() - start
        indices, valid = before
        cache = np.where(valid[:, None], indices[:, 1:], NO_INDEX)
        result = mine_tuples(
            query_desc,
            db_desc,
            self._train_positives,
            self._non_negatives,
            num_negatives=self.num_negatives,
            num_candidates=min(self.num_candidates, self.dataset.num_db),
            negative_cache=cache,
            seed=self.seed + len(self.refreshes),
            db_usable=db_ok,
            verbose=bool(self.verbose),
        )
        positive_idx, negative_idx, valid = result
        return encode_seconds, (positive_idx, negative_idx, valid & query_ok)

    def _mine_partial(self, query_ids, before):
        indices, valid = before
        rng = np.random.default_rng(self.seed + len(self.refreshes))
        positives = [self._train_positives[i] for i in query_ids]
        cache = np.where(valid[query_ids, None], indices[query_ids, 1:], NO_INDEX)
        shared = rng.choice(
            self.dataset.num_db, min(self.partial_db_size, self.dataset.num_db), replace=False
        )
        db_ids = np.unique(np.concatenate([shared, *positives, cache[cache != NO_INDEX]]))
        local = np.full(self.dataset.num_db, NO_INDEX, dtype=np.int64)
        local[db_ids] = np.arange(len(db_ids))

        start = time.perf_counter()
        all_queries = self.dataset.query_image_paths()
        all_db = self.dataset.db_image_paths()
        query_desc, query_ok = self._encode(
            [all_queries[i] for i in query_ids], np.float32, "queries"
        )
        db_desc, db_ok = self._encode([all_db[i] for i in db_ids], np.float32, "database subset")
        encode_seconds = time.perf_counter() - start

        def to_local(ids):
            mapped = local[ids]
            return mapped[mapped != NO_INDEX]

        positive_idx, negative_idx, mined_valid = mine_tuples(
            query_desc,
            db_desc,
            [to_local(p) for p in positives],
            [to_local(self._non_negatives[i]) for i in query_ids],
            num_negatives=self.num_negatives,
            # Every subset image outside the query's 25 m is a candidate: the random part of
            # the subset is already the random sample.
            num_candidates=len(db_ids),
            negative_cache=np.where(cache == NO_INDEX, NO_INDEX, local[np.maximum(cache, 0)]),
            seed=self.seed + len(self.refreshes),
            db_usable=db_ok,
        )
        positive_idx = np.where(positive_idx == NO_INDEX, NO_INDEX, db_ids[positive_idx])
        negative_idx = np.where(negative_idx == NO_INDEX, NO_INDEX, db_ids[negative_idx])
        return encode_seconds, (positive_idx, negative_idx, mined_valid & query_ok)

    def _next_partial_chunk(self) -> np.ndarray:
        if self.pipeline_seed is not None and hasattr(self.state, "epoch"):
            return self._served_next()
        order = self._partial_order
        take = min(self.refresh_every, len(order))
        positions = (self._partial_cursor + np.arange(take)) % len(order)
        self._partial_cursor = int((self._partial_cursor + take) % len(order))
        return np.sort(order[positions])

    def pass_order(self, pass_number: int) -> np.ndarray:
        """The query order of the pipeline's pass `pass_number` (needs `pipeline_seed`)."""
        import tensorflow as tf

        ids = tf.cast(tf.reshape(tf.where(self.state.valid), [-1]), tf.int32)
        seed = tf.stack(
            [tf.constant(int(self.pipeline_seed), tf.int64), tf.constant(pass_number, tf.int64)]
        )
        return tf.random.experimental.stateless_shuffle(ids, seed=seed).numpy()

    def _served_next(self) -> np.ndarray:
        """The next `refresh_every` query ids in the pipeline's order (into the next pass)."""
        num_valid = int(np.count_nonzero(keras.ops.convert_to_numpy(self.state.valid)))
        if self.drop_remainder:
            batches_per_pass = max(1, num_valid // self.tuples_per_batch)
            served_per_pass = min(num_valid, batches_per_pass * self.tuples_per_batch)
        else:
            batches_per_pass = max(1, -(-num_valid // self.tuples_per_batch))
            served_per_pass = num_valid
        pass_number = self._first_pass + self._batches_seen // batches_per_pass
        position = (self._batches_seen % batches_per_pass) * self.tuples_per_batch
        chunk = []
        wanted = min(self.refresh_every, served_per_pass)
        while sum(len(c) for c in chunk) < wanted:
            order = self.pass_order(pass_number)[:served_per_pass]
            chunk.append(order[position : position + wanted - sum(len(c) for c in chunk)])
            pass_number, position = pass_number + 1, 0
        return np.unique(np.concatenate(chunk)).astype(np.int64)

    def _encode(self, paths, dtype, label: str) -> tuple[np.ndarray, np.ndarray]:
        """`(descriptors as dtype, readable mask)`, converted chunk by chunk (bounded copies)."""
        from sare_tf.evaluation import extract_descriptors

        chunk = 256
        bar = keras.utils.Progbar(len(paths), unit_name="image") if self.verbose else None
        if bar is not None:
            print(f"Mining: encoding {len(paths)} {label} images")
        parts, readable = [], []
        for start in range(0, len(paths), chunk):
            descriptors, ok = extract_descriptors(
                self._encoder_fn(),
                paths[start : start + chunk],
                image_size=self.image_size,
                batch_size=self.batch_size,
                progress=False,
                return_valid=True,
            )
            parts.append(np.asarray(descriptors, dtype=dtype))
            readable.append(ok)
            if bar is not None:
                bar.update(min(start + chunk, len(paths)))
        if not parts:
            return np.zeros((0, 0), dtype), np.zeros(0, bool)
        return np.concatenate(parts), np.concatenate(readable)

    def _encoder_fn(self):
        """One traced inference function for the whole run (weights are read at call time)."""
        if self._encoder is None:
            from sare_tf.encoding import inference_function
            from sare_tf.models import embedding_of

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
