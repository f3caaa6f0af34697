"""The training input: (query, positive, N negatives) image tuples driven by a mining state.

The mining callback (`sare_tf.mining`) writes, between epochs, which database images form each
query's tuple into `MiningState` (tf.Variables). The dataset reads those variables while it
runs: the list of valid queries when a pass starts (then shuffled with a seed that depends on
the pass number), and each query's row of ids when that query's element is made. An update made
between two epochs is therefore seen by the next epoch, without rebuilding the dataset.

    valid queries (read, shuffled per pass) -> row of ids (read) -> 2+N paths
        -> parallel decode + resize (Pillow decode, TF resize; bad files per policy)
           + optional augmentation, per image -> [2+N, H, W, 3] -> batch -> prefetch

Order inside a tuple: query, positive, negatives (the loss's convention, DESIGN.md).

`TuplePipeline` is the one place that knows the order queries are served in (pass `e` shuffles
the valid queries with the stateless seed `(seed, e)`): the mining callback asks it which
queries come next instead of replaying the shuffle itself.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sare_tf.data.checks import BadImageLog, check_policy
from sare_tf.data.geo_dataset import GeoDataset
from sare_tf.data.images import DEFAULT_MAX_PIXELS, safe_load_image
from sare_tf.data.parallelism import PREFETCH_BATCHES, decoders, without_autotuning


class MiningState:
    """Tuples of every training query, held in tf.Variables the tuple dataset reads.

    Args:
        num_queries: Q, the dataset's query count (ids are query indices).
        num_negatives: N negatives per tuple.
        num_db: optional database size, to check ids on `assign`.

    Attributes:
        indices: `[Q, 1 + N]` int32 variable: the positive db id, then N negative db ids.
        valid: `[Q]` bool variable: queries that take part in the next epoch.
        epoch: int64 variable counting the passes started over the tuple dataset; pass `e`
            shuffles the queries with seed `(seed, e)`. Assign it to replay an epoch's order.
    """

    def __init__(self, num_queries: int, num_negatives: int, num_db: int | None = None):
        if num_queries < 0 or num_negatives < 1:
            raise ValueError(
                "`num_queries` must be >= 0 and `num_negatives` >= 1. "
                f"Received: num_queries={num_queries}, num_negatives={num_negatives}"
            )
        self.num_queries = int(num_queries)
        self.num_negatives = int(num_negatives)
        self.num_db = None if num_db is None else int(num_db)
        self.indices = tf.Variable(
            tf.zeros([self.num_queries, 1 + self.num_negatives], tf.int32),
            trainable=False,
            name="mining_indices",
        )
        self.valid = tf.Variable(
            tf.zeros([self.num_queries], tf.bool), trainable=False, name="mining_valid"
        )
        self.epoch = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="mining_epoch")

    def assign(self, positive_idx, negative_idx, valid) -> None:
        """Sets all tuples at once (e.g. from `sare_tf.mining.mine_tuples`).

        Args:
            positive_idx: `[Q]` db id of each query's positive.
            negative_idx: `[Q, N]` db ids of each query's negatives.
            valid: `[Q]` bool; rows of invalid queries are ignored (may hold -1).

        Raises:
            ValueError: wrong shapes, or an id out of range in a valid row.
        """
        positive_idx = np.asarray(positive_idx).reshape(-1)
        negative_idx = np.asarray(negative_idx)
        valid = np.asarray(valid, dtype=bool).reshape(-1)
        q, n = self.num_queries, self.num_negatives
        if positive_idx.shape != (q,) or negative_idx.shape != (q, n) or valid.shape != (q,):
            raise ValueError(
                f"Expected positive_idx [{q}], negative_idx [{q}, {n}], valid [{q}]. "
                f"Received: positive_idx.shape={positive_idx.shape}, "
                f"negative_idx.shape={negative_idx.shape}, valid.shape={valid.shape}"
            )
        rows = np.concatenate([positive_idx[:, None], negative_idx], axis=1)
        used = rows[valid]
        upper = self.num_db if self.num_db is not None else np.iinfo(np.int32).max
        if used.size and (used.min() < 0 or used.max() >= upper):
            bad = int(
                np.flatnonzero(valid)[np.flatnonzero(((used < 0) | (used >= upper)).any(1))[0]]
            )
            raise ValueError(
                f"Database id out of range [0, {upper}) in the tuple of valid query {bad}. "
                f"Received: row={rows[bad].tolist()}"
            )
        self.indices.assign(np.where(valid[:, None], rows, 0).astype(np.int32))
        self.valid.assign(valid)

    def num_valid(self) -> int:
        return int(tf.reduce_sum(tf.cast(self.valid, tf.int32)))


def random_tuples(
    dataset: GeoDataset, num_negatives: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tuples without descriptors: the geographically nearest positive, random negatives.

    Useful before the first mining (or for tests). Negatives are drawn without replacement
    among the db images outside the query's `non_negatives()` (with replacement if fewer than N).

    Returns:
        `(positive_idx [Q], negative_idx [Q, N], valid [Q])` as `MiningState.assign` takes.
    """
    rng = np.random.default_rng(seed)
    train_positives = dataset.train_positives()
    non_negatives = dataset.non_negatives()
    positive_idx = np.full(dataset.num_queries, -1, np.int64)
    negative_idx = np.full((dataset.num_queries, num_negatives), -1, np.int64)
    valid = np.zeros(dataset.num_queries, bool)
    for q in range(dataset.num_queries):
        candidates = np.setdiff1d(np.arange(dataset.num_db), non_negatives[q])
        if train_positives[q].size == 0 or candidates.size == 0:
            continue
        positive_idx[q] = train_positives[q][0]
        replace = candidates.size < num_negatives
        negative_idx[q] = rng.choice(candidates, num_negatives, replace=replace)
        valid[q] = True
    return positive_idx, negative_idx, valid


def default_augmentation(image_size: tuple[int, int], seed: int = 0) -> keras.Sequential:
    """Colour jitter and a small random crop (Keras 3 preprocessing layers), per image.

    Brightness and contrast jitter, then a random crop of 92% of each side resized back to
    `image_size`. (Saturation / hue jitter and zoom by projective transform cost 3-6x more per
    image on a CPU; pass your own layer as `augment=` to use them.)

    Args:
        image_size: `(height, width)` of the images (float 0-255).
        seed: seed of the random layers.
    """
    height, width = int(image_size[0]), int(image_size[1])
    return keras.Sequential(
        [
            keras.layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=0.15, contrast_factor=0.2, seed=seed
            ),
            keras.layers.RandomCrop(
                max(1, round(0.92 * height)), max(1, round(0.92 * width)), seed=seed + 1
            ),
            keras.layers.Resizing(height, width),
        ],
        name="tuple_augmentation",
    )


def pass_ids(valid, seed, pass_number, shuffle: bool = True):
    """The valid query ids in the order pass `pass_number` serves them (a tf.int32 vector).

    The one definition of the order, used by the dataset (in the graph, when a pass starts) and
    by `TuplePipeline.pass_order` (eagerly, for the mining callback).
    """
    ids = tf.cast(tf.reshape(tf.where(valid), [-1]), tf.int32)
    if not shuffle:
        return ids
    seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(pass_number, tf.int64)])
    return tf.random.experimental.stateless_shuffle(ids, seed=seed)


class TuplePipeline:
    """The training input: tuple batches driven by a `MiningState`, and the order it serves.

    Args:
        dataset: the training `GeoDataset` (query ids of `state` index its queries).
        state: the `MiningState` (read while the dataset runs).
        image_size: `(height, width)` every image is resized to (the paper: 480x640).
        batch_size: tuples per batch.
        augment: False, True (`default_augmentation`: brightness/contrast jitter and a small
            random crop), or a Keras layer applied to each `[H, W, 3]` image (float 0-255)
            with `training=True`.
        seed: seeds the per-pass shuffle (pass `e` uses `(seed, e)`) and the augmentation.
        shuffle: shuffle the valid queries at every pass (else in id order).
        drop_remainder: drop a last incomplete batch.
        num_parallel_calls: parallel image loads (default: one per usable core; the pipeline
            does not autotune, see `sare_tf.data.parallelism`).
        prefetch: batches prepared ahead.
        bad_images: a `BadImageLog` to record bad files in (one is made from `on_bad_image`
            otherwise); available as the dataset's `bad_images` attribute.
        on_bad_image: "skip" (drop tuples with a bad image, count them) or "error".
        max_pixels: larger images count as bad.

    Attributes:
        dataset: the training `GeoDataset`.
        state: the `MiningState`.
        image_size, batch_size, seed, shuffle, drop_remainder: as given.

    Example:
        >>> pipeline = TuplePipeline(train, MiningState(train.num_queries, 10), (480, 640))
        >>> mining = HardNegativeMining(pipeline, mine_on_train_begin=False)
        >>> mining.set_model(tuple_model)
        >>> mining.refresh(full=True)  # the first tuples: `batches_per_pass` counts their queries
        >>> tuple_model.fit(pipeline.tf_dataset().repeat(), epochs=30,
        ...                 steps_per_epoch=pipeline.batches_per_pass(), callbacks=[mining])
    """

    def __init__(
        self,
        dataset: GeoDataset,
        state: MiningState,
        image_size: tuple[int, int] = (480, 640),
        batch_size: int = 4,
        augment: bool | keras.layers.Layer = False,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        prefetch: int = PREFETCH_BATCHES,
        bad_images: BadImageLog | None = None,
        on_bad_image: str = "skip",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if state.num_queries != dataset.num_queries:
            raise ValueError(
                f"The mining state has {state.num_queries} queries but the dataset "
                f"'{dataset.name}' has {dataset.num_queries} queries."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1. Received: batch_size={batch_size}")
        self.dataset = dataset
        self.state = state
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = batch_size
        self.augment = augment
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.num_parallel_calls = decoders(num_parallel_calls)
        if int(prefetch) < 1:
            raise ValueError(
                f"`prefetch` must be a number of batches >= 1. Received: prefetch={prefetch}"
            )
        self.prefetch = int(prefetch)
        self.bad_images = bad_images or BadImageLog(check_policy(on_bad_image))
        self.max_pixels = max_pixels

    # --- the order ---------------------------------------------------------------------------

    def pass_order(self, pass_number: int) -> np.ndarray:
        """The query ids pass `pass_number` serves, in order (from the current `valid`)."""
        ids = pass_ids(self.state.valid, self.seed, pass_number, self.shuffle).numpy()
        return ids[: self.served_per_pass(len(ids))]

    def batches_per_pass(self, num_valid: int | None = None) -> int:
        num_valid = self.state.num_valid() if num_valid is None else num_valid
        if self.drop_remainder:
            return max(1, num_valid // self.batch_size)
        return max(1, -(-num_valid // self.batch_size))

    def served_per_pass(self, num_valid: int) -> int:
        if self.drop_remainder:
            return min(num_valid, (num_valid // self.batch_size) * self.batch_size)
        return num_valid

    def queries_served(self, first_pass: int, batches_seen: int, count: int) -> np.ndarray:
        """The next `count` query ids after `batches_seen` batches from the start of `first_pass`.

        Continues into the following passes when the current one ends (sorted, unique ids). It
        matches what the dataset serves as long as no tuple is dropped for a bad image.
        """
        per_pass = self.batches_per_pass()
        pass_number = first_pass + batches_seen // per_pass
        position = (batches_seen % per_pass) * self.batch_size
        wanted = min(count, self.served_per_pass(self.state.num_valid()))
        chunk, taken = [], 0
        while taken < wanted:
            order = self.pass_order(pass_number)
            part = order[position : position + wanted - taken]
            chunk.append(part)
            taken += len(part)
            pass_number, position = pass_number + 1, 0
        return np.unique(np.concatenate(chunk or [np.zeros(0, np.int32)])).astype(np.int64)

    # --- the data ----------------------------------------------------------------------------

    def tf_dataset(self) -> tf.data.Dataset:
        """Batches `(images float32 [B, 2+N, H, W, 3] in [0, 255], y float32 [B] zeros)`.

        One pass over the valid queries, pass `e` in the order `pass_order(e)`; the
        cardinality is unknown to tf.data (it follows `state.valid`). To train, `.repeat()` it
        and give `fit` `steps_per_epoch=batches_per_pass()`: Keras then keeps one iterator for
        the whole run, each repetition starting the next pass (given the single pass, Keras
        runs the first epoch to the end of the data, with a "ran out of data" warning, and
        makes a new iterator at every epoch's start). The pipeline does not autotune:
        `sare_tf.data.parallelism` says why.
        """
        state, (height, width) = self.state, self.image_size
        tuple_length = 2 + state.num_negatives
        query_paths = tf.constant(self.dataset.query_image_paths() or [""], tf.string)
        db_paths = tf.constant(self.dataset.db_image_paths() or [""], tf.string)
        seed_value = tf.constant(self.seed, tf.int64)

        def start_pass(_):
            # Runs when a pass (epoch) starts: reads `valid` and the pass number now.
            pass_number = state.epoch.assign_add(1) - 1
            ids = pass_ids(state.valid, seed_value, pass_number, self.shuffle)
            return tf.data.Dataset.from_tensor_slices(ids)

        def tuple_paths(query_id):
            row = tf.gather(state.indices, query_id)  # read at element time
            return tf.concat([query_paths[query_id][None], tf.gather(db_paths, row)], axis=0)

        augmentation = None
        if self.augment is not False and self.augment is not None:
            augmentation = (
                default_augmentation((height, width), self.seed)
                if self.augment is True
                else self.augment
            )

        def load(path):
            image, ok = safe_load_image(path, (height, width), self.bad_images, self.max_pixels)
            if augmentation is not None:
                # Per image, inside the parallel map: every image gets its own random parameters.
                image = tf.clip_by_value(augmentation(image, training=True), 0.0, 255.0)
                image = tf.ensure_shape(image, [height, width, 3])
            return image, ok

        pipeline = tf.data.Dataset.range(1).flat_map(start_pass)
        pipeline = pipeline.map(tuple_paths).unbatch()
        pipeline = pipeline.map(load, num_parallel_calls=self.num_parallel_calls)
        pipeline = pipeline.batch(tuple_length, drop_remainder=True)
        pipeline = pipeline.filter(lambda images, oks: tf.reduce_all(oks))
        pipeline = pipeline.map(lambda images, oks: images)
        pipeline = pipeline.batch(self.batch_size, drop_remainder=self.drop_remainder)
        pipeline = pipeline.map(
            lambda images: (images, tf.zeros([tf.shape(images)[0]], tf.float32))
        )
        pipeline = without_autotuning(pipeline.prefetch(self.prefetch))
        pipeline.bad_images = self.bad_images
        pipeline.tuple_pipeline = self
        return pipeline


def make_tuple_dataset(dataset: GeoDataset, state: MiningState, *args, **kwargs) -> tf.data.Dataset:
    """`TuplePipeline(dataset, state, ...).tf_dataset()`; the pipeline is the result's
    `tuple_pipeline` attribute (pass it to `HardNegativeMining`)."""
    return TuplePipeline(dataset, state, *args, **kwargs).tf_dataset()
