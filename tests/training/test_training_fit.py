"""`model.fit` with the HardNegativeMining callback on the tiny synthetic city (tiny backbone).

The mining state is checked after every refresh against a brute-force float64 reference
computed here from the model's current weights; validation recall is checked against a
numpy recall of the final model; partial mining is checked to re-mine exactly the queries
the tuple pipeline serves next.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.data.images import safe_load_image
from sare_tf.data.tuples import MiningState, TuplePipeline, make_tuple_dataset
from sare_tf.layers import NetVLAD
from sare_tf.losses import get_loss
from sare_tf.mining import HardNegativeMining, PartialRefresh
from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer
from sare_tf.training import BestModelCheckpoint, ValidationRecall

IMAGE_SIZE = (48, 64)
NUM_NEGATIVES = 2
BATCH = 4


def _images(paths):
    return np.stack([safe_load_image(p, IMAGE_SIZE)[0].numpy() for p in paths])


def _embed(model, images):
    return np.asarray(model(images, training=False), dtype=np.float64)


def _build_embedding(train):
    model = build_embedding_model("tiny", num_clusters=4, trainable_from=None)
    # Deterministic, data-driven centroids without running cluster init (tested elsewhere).
    rng = np.random.default_rng(0)
    netvlad_layer(model).set_centroids(0.05 * rng.normal(size=(4, 128)), alpha=10.0)
    return model


class StateChecker(keras.callbacks.Callback):
    """After each refresh: state == brute-force hardest tuples of the current descriptors."""

    def __init__(self, mining, state, train, embedding):
        super().__init__()
        self.mining, self.state, self.train, self.embedding = mining, state, train, embedding
        self.query_images = _images(train.query_image_paths())
        self.db_images = _images(train.db_image_paths())
        self.snapshots = []
        self.worst_error = 0.0

    def _check(self):
        if len(self.mining.refreshes) == len(self.snapshots):
            return
        indices = self.state.indices.numpy().astype(np.int64)
        valid = self.state.valid.numpy()
        self.snapshots.append(indices.copy())
        xq = _embed(self.embedding, self.query_images)
        xb = _embed(self.embedding, self.db_images)
        dist = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
        positives, non_negatives = self.train.train_positives(), self.train.non_negatives()
        np.testing.assert_array_equal(valid, [len(p) > 0 for p in positives])
        for i in np.flatnonzero(valid):
            positive, negatives = indices[i, 0], indices[i, 1:]
            assert positive in positives[i]
            assert not set(negatives.tolist()) & set(non_negatives[i].tolist())
            allowed = np.setdiff1d(np.arange(self.train.num_db), non_negatives[i])
            hardest = np.sort(dist[i, allowed])[:NUM_NEGATIVES]
            errors = [
                abs(dist[i, positive] - dist[i, positives[i]].min()),
                *np.abs(dist[i, negatives] - hardest),
            ]
            self.worst_error = max(self.worst_error, float(np.max(errors)))

    def on_train_begin(self, logs=None):
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        self._check()


def _numpy_recall(model, dataset, n):
    xq = _embed(model, _images(dataset.query_image_paths()))
    xb = _embed(model, _images(dataset.db_image_paths()))
    ranked = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :n]
    geo = np.linalg.norm(dataset.query_utm[:, None] - dataset.db_utm[None], axis=-1)
    return float(np.mean([np.any(geo[i, ranked[i]] <= 25.0) for i in range(len(xq))]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # each pass ends an epoch
def test_fit_with_mining_callback_two_epochs(tiny_city, tmp_path):
    train = GeoDataset.from_dbstruct(tiny_city["train"])
    val = GeoDataset.from_dbstruct(tiny_city["val"])
    embedding = _build_embedding(train)
    tuple_model = build_tuple_model(embedding, NUM_NEGATIVES)
    tuple_model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9), loss=get_loss("sare-joint"), jit_compile=False
    )
    state = MiningState(train.num_queries, NUM_NEGATIVES, num_db=train.num_db)
    dataset = make_tuple_dataset(train, state, IMAGE_SIZE, batch_size=BATCH, seed=1)
    mining = HardNegativeMining(
        dataset.tuple_pipeline, refresh_every=16, num_candidates=1000, seed=0, verbose=0
    )
    checker = StateChecker(mining, state, train, embedding)
    validation = ValidationRecall(val, IMAGE_SIZE, verbose=0)
    best_path = tmp_path / "best.keras"
    checkpoint = BestModelCheckpoint(best_path)
    history = tuple_model.fit(
        dataset,
        epochs=2,
        callbacks=[mining, checker, validation, checkpoint],
        verbose=0,
        shuffle=False,
    )

    num_train = int(sum(len(p) > 0 for p in train.train_positives()))
    batches = 2 * -(-num_train // BATCH)
    assert len(mining.refreshes) == 1 + batches * BATCH // 16
    assert len(checker.snapshots) == len(mining.refreshes)
    assert checker.worst_error < 1e-4  # every refresh = the true hardest tuples at that time
    changes = [
        not np.array_equal(a, b)
        for a, b in zip(checker.snapshots[:-1], checker.snapshots[1:], strict=True)
    ]
    assert any(changes), "the mining state never changed between refreshes"

    for n in (1, 5, 10):
        assert len(history.history[f"val_recall@{n}"]) == 2
    assert history.history["val_recall@5"][-1] == pytest.approx(_numpy_recall(embedding, val, 5))
    assert np.isfinite(history.history["loss"]).all()

    best_value = max(history.history["val_recall@5"])
    assert checkpoint.best == pytest.approx(best_value)
    assert checkpoint.best_epoch == 1 + int(np.argmax(history.history["val_recall@5"]))
    reloaded = keras.models.load_model(best_path)
    assert any(isinstance(layer, NetVLAD) for layer in reloaded.layers)
    assert _numpy_recall(reloaded, val, 5) == pytest.approx(best_value)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


@pytest.mark.slow
def test_partial_mining_remines_the_queries_served_next(tiny_city):
    train = GeoDataset.from_dbstruct(tiny_city["train"])
    embedding = _build_embedding(train)
    tuple_model = build_tuple_model(embedding, NUM_NEGATIVES)
    tuple_model.compile(keras.optimizers.SGD(0.01), loss=get_loss("sare-joint"))
    state = MiningState(train.num_queries, NUM_NEGATIVES, num_db=train.num_db)
    dataset = make_tuple_dataset(train, state, IMAGE_SIZE, batch_size=BATCH, seed=7)
    mining = HardNegativeMining(
        dataset.tuple_pipeline, refresh_every=8, policy=PartialRefresh(db_size=20), verbose=0
    )
    mining.set_model(tuple_model)
    mining.on_train_begin()  # full mining, as fit does before creating the iterator
    query_images = _images(train.query_image_paths())

    def served(batch):
        firsts = np.asarray(batch[0])[:, 0]  # the query image of each tuple
        diffs = np.abs(firsts[:, None] - query_images[None]).mean(axis=(2, 3, 4))
        assert np.all(np.sort(diffs, axis=1)[:, 0] == 0)  # identical pixels: same loader
        return np.argmin(diffs, axis=1).tolist()

    # Batches 1-2, then a refresh; the chunk re-mined must be what batches 3-4 serve. Then
    # batches 3-6 (end of the pass), a refresh that spans into the next pass.
    iterator = iter(dataset)
    served_ids, chunks = [], []
    for step in range(6):
        served_ids.append(served(next(iterator)))
        before = state.indices.numpy().copy()
        mining.on_train_batch_end(step)
        if len(mining.refreshes) > len(chunks) + 1:
            chunk = mining.last_query_ids
            chunks.append((step, chunk))
            after = state.indices.numpy()
            others = np.setdiff1d(np.arange(train.num_queries), chunk)
            np.testing.assert_array_equal(after[others], before[others])
    assert [step for step, _ in chunks] == [1, 3, 5]
    np.testing.assert_array_equal(chunks[0][1], np.sort(served_ids[2] + served_ids[3]))
    np.testing.assert_array_equal(chunks[1][1], np.sort(served_ids[4] + served_ids[5]))
    assert [r["mode"] for r in mining.refreshes] == ["full", "partial", "partial", "partial"]
    # Step 5 ends pass 0 (24 queries = 6 batches): its chunk is the start of pass 1.
    next_iterator = iter(dataset)
    next_pass = [served(next(next_iterator)) for _ in range(2)]
    np.testing.assert_array_equal(chunks[2][1], np.sort(next_pass[0] + next_pass[1]))


def test_unreadable_images_are_never_mined_and_their_queries_are_invalid(tiny_city, tmp_path):
    import shutil

    shutil.copytree(tiny_city["root"], tmp_path / "city")
    train = GeoDataset.from_dbstruct(tmp_path / "city" / os.path.basename(tiny_city["train"]))
    tuple_model = build_tuple_model(_build_embedding(train), NUM_NEGATIVES)

    def mine():
        state = MiningState(train.num_queries, NUM_NEGATIVES, num_db=train.num_db)
        pipeline = TuplePipeline(train, state, IMAGE_SIZE)
        mining = HardNegativeMining(pipeline, num_candidates=1000, verbose=0)
        mining.set_model(tuple_model)
        mining.refresh()
        return state.indices.numpy(), state.valid.numpy()

    indices, valid = mine()
    assert valid[1]
    chosen = int(indices[0, 0])  # query 0's positive: an image mining wants
    for path in (train.db_image_paths()[chosen], train.query_image_paths()[1]):
        with open(path, "wb") as handle:
            handle.write(b"not a jpeg")
    indices, valid = mine()
    assert not valid[1] and valid.sum() == len(valid) - 1
    assert chosen not in indices[valid]
