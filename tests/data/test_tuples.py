"""The tuple pipeline: right images in the right order, state updates seen between epochs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sare_tf.data import GeoDataset
from sare_tf.data.checks import BadImageLog
from sare_tf.data.tuples import MiningState, make_tuple_dataset, random_tuples

SIZE = (8, 12)
NUM_DB, NUM_Q, N = 30, 10, 3


def _encode(image_id: int, is_query: bool) -> np.ndarray:
    """An image whose colour is its id: R = id, G = 100 (db) or 200 (query)."""
    pixels = np.zeros(SIZE + (3,), np.uint8)
    pixels[..., 0] = image_id
    pixels[..., 1] = 200 if is_query else 100
    return pixels


def _decode(images) -> list[tuple[int, int]]:
    """`[..., H, W, 3]` -> (id, is_query) per image, from the mean colour."""
    mean = np.asarray(images).reshape(-1, SIZE[0] * SIZE[1], 3).mean(1)
    return [(int(round(r)), int(round(g)) == 200) for r, g, _ in mean]


@pytest.fixture()
def id_dataset(tmp_path):
    for i in range(NUM_DB):
        Image.fromarray(_encode(i, False)).save(tmp_path / f"db_{i:02d}.png")
    for i in range(NUM_Q):
        Image.fromarray(_encode(i, True)).save(tmp_path / f"q_{i:02d}.png")
    return GeoDataset(
        [f"db_{i:02d}.png" for i in range(NUM_DB)],
        np.stack([np.arange(NUM_DB) * 30.0, np.zeros(NUM_DB)], 1),
        [f"q_{i:02d}.png" for i in range(NUM_Q)],
        np.stack([np.arange(NUM_Q) * 30.0 + 2, np.zeros(NUM_Q)], 1),
        image_root=str(tmp_path),
    )


def _state(rng_seed, invalid=()):
    rng = np.random.default_rng(rng_seed)
    positive = rng.integers(0, NUM_DB, NUM_Q)
    negative = rng.integers(0, NUM_DB, (NUM_Q, N))
    valid = np.ones(NUM_Q, bool)
    valid[list(invalid)] = False
    return positive, negative, valid


def _epoch(dataset) -> list[list[tuple[int, int]]]:
    tuples = []
    for images, y in dataset:
        assert images.dtype == tf.float32 and y.dtype == tf.float32
        assert images.shape[1:] == (2 + N, *SIZE, 3) and y.shape == (images.shape[0],)
        np.testing.assert_array_equal(y.numpy(), 0.0)
        tuples += [_decode(t) for t in images.numpy()]
    return tuples


def _expected(query_ids, positive, negative):
    return [
        [(q, True), (int(positive[q]), False)] + [(int(n), False) for n in negative[q]]
        for q in query_ids
    ]


def test_right_images_in_right_order(id_dataset):
    state = MiningState(NUM_Q, N, num_db=NUM_DB)
    positive, negative, valid = _state(0, invalid=(2, 7))
    state.assign(positive, negative, valid)
    ds = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=3, shuffle=False)
    got = _epoch(ds)
    assert got == _expected([0, 1, 3, 4, 5, 6, 8, 9], positive, negative)


def test_shuffle_is_seeded_per_epoch(id_dataset):
    positive, negative, valid = _state(1)
    orders = []
    for _ in range(2):  # two independent states and datasets with the same seed
        state = MiningState(NUM_Q, N)
        state.assign(positive, negative, valid)
        ds = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=4, seed=5)
        orders.append([[t[0][0] for t in _epoch(ds)] for _ in range(3)])
        assert int(state.epoch.numpy()) == 3
    assert orders[0] == orders[1]  # reproducible
    first, second, third = orders[0]
    assert sorted(first) == list(range(NUM_Q))  # each epoch covers every valid query once
    assert first != second and second != third  # reshuffled every epoch
    state = MiningState(NUM_Q, N)
    state.assign(positive, negative, valid)
    other = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=4, seed=6)
    assert [t[0][0] for t in _epoch(other)] != first


def test_state_update_between_epochs_is_seen(id_dataset):
    state = MiningState(NUM_Q, N)
    first = _state(2)
    state.assign(*first)
    ds = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=4, shuffle=False)
    assert _epoch(ds) == _expected(range(NUM_Q), first[0], first[1])
    second = _state(3, invalid=(0, 1, 2))
    state.assign(*second)
    assert _epoch(ds) == _expected(range(3, NUM_Q), second[0], second[1])


class _Recorder(keras.Model):
    """Records the tuples fit feeds it (eager), without learning anything."""

    def __init__(self):
        super().__init__()
        self.scale = self.add_weight(shape=(), initializer="zeros", name="scale")
        self.seen = []

    def call(self, x):
        return tf.reduce_mean(x, axis=[1, 2, 3, 4]) * self.scale

    def train_step(self, data):
        images, _ = data
        self.seen.append([_decode(t) for t in images.numpy()])
        return {"batches": tf.constant(len(self.seen), tf.float32)}


def test_model_fit_sees_update_made_by_a_callback(id_dataset):
    state = MiningState(NUM_Q, N)
    first, second = _state(4), _state(5, invalid=(9,))
    state.assign(*first)

    class Mine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                state.assign(*second)

    ds = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=5, shuffle=False)
    model = _Recorder()
    model.compile(run_eagerly=True)
    model.fit(ds, epochs=2, callbacks=[Mine()], verbose=0, shuffle=False)
    assert len(model.seen) == 4  # 10 tuples, then 9 tuples, in batches of 5
    epoch_one = model.seen[0] + model.seen[1]
    epoch_two = model.seen[2] + model.seen[3]
    assert epoch_one == _expected(range(NUM_Q), first[0], first[1])
    assert epoch_two == _expected(range(9), second[0], second[1])


def test_bad_image_skips_its_tuples_and_is_counted(id_dataset, tmp_path):
    (tmp_path / "db_05.png").write_bytes(b"")  # empty file
    state = MiningState(NUM_Q, N)
    positive, negative, valid = _state(6)
    negative[:, 0] = 1
    negative[[2, 4], 0] = 5  # two tuples use the broken image
    state.assign(positive, negative, valid)
    positive[positive == 5] = 6
    state.assign(positive, negative, valid)
    ds = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=4, shuffle=False)
    got = _epoch(ds)
    kept = [q for q in range(NUM_Q) if q not in (2, 4)]
    assert got == _expected(kept, positive, negative)
    assert ds.bad_images.count == 2
    assert list(ds.bad_images.files) == [str(tmp_path / "db_05.png")]
    assert "empty file" in ds.bad_images.summary()

    ds = make_tuple_dataset(
        id_dataset, state, image_size=SIZE, shuffle=False, bad_images=BadImageLog("error")
    )
    with pytest.raises(tf.errors.OpError, match="db_05.png"):
        _epoch(ds)


def test_augmentation_keeps_shape_and_range(id_dataset):
    state = MiningState(NUM_Q, N)
    state.assign(*_state(7))
    plain = make_tuple_dataset(id_dataset, state, image_size=SIZE, batch_size=10, shuffle=False)
    augmented = make_tuple_dataset(
        id_dataset, state, image_size=SIZE, batch_size=10, shuffle=False, augment=True
    )
    x_plain = next(iter(plain))[0].numpy()
    x_aug = next(iter(augmented))[0].numpy()
    assert x_aug.shape == x_plain.shape == (10, 2 + N, *SIZE, 3)
    assert x_aug.min() >= 0 and x_aug.max() <= 255
    assert np.abs(x_aug - x_plain).mean() > 1.0


def test_random_tuples_respect_ground_truth(tiny_city):
    geo = GeoDataset.from_dbstruct(tiny_city["train"])
    positive, negative, valid = random_tuples(geo, num_negatives=4, seed=0)
    distances = np.linalg.norm(geo.db_utm[negative] - geo.query_utm[:, None], axis=-1)
    assert valid.all()
    assert (distances > geo.pos_dist_thr).all()
    pos_dist = np.linalg.norm(geo.db_utm[positive] - geo.query_utm, axis=1)
    assert (pos_dist <= geo.nontriv_pos_dist_thr).all()


def test_mining_state_validation():
    state = MiningState(4, 2, num_db=10)
    with pytest.raises(ValueError, match=r"negative_idx \[4, 2\]"):
        state.assign(np.zeros(4), np.zeros((4, 3)), np.ones(4, bool))
    with pytest.raises(ValueError, match="out of range.*valid query 1"):
        state.assign([0, 10, 0, 0], np.zeros((4, 2)), np.ones(4, bool))
    state.assign([0, -1, 0, 0], [[1, 2], [-1, -1], [3, 4], [5, 6]], [True, False, True, True])
    assert state.num_valid() == 3
    assert state.indices.numpy()[1].tolist() == [0, 0, 0]


def test_mismatched_state_is_rejected(id_dataset):
    with pytest.raises(ValueError, match="mining state has 3 queries"):
        make_tuple_dataset(id_dataset, MiningState(3, 2), image_size=SIZE)


def test_tuples_from_synthetic_city_jpegs_match_the_files(tiny_city):
    from sare_tf.data.images import load_image

    geo = GeoDataset.from_dbstruct(tiny_city["train"])
    state = MiningState(geo.num_queries, 2, num_db=geo.num_db)
    positive, negative, valid = random_tuples(geo, num_negatives=2, seed=1)
    state.assign(positive, negative, valid)
    # 45x60 from 60x80 files: no reduced-scale JPEG decoding, so exactly `load_image`'s pixels.
    ds = make_tuple_dataset(geo, state, image_size=(45, 60), batch_size=3, shuffle=False)
    images, _ = next(iter(ds))
    assert images.shape == (3, 4, 45, 60, 3)
    for b, query in enumerate(np.flatnonzero(valid)[:3]):
        paths = [geo.query_image_paths()[query]] + [
            geo.db_image_paths()[i] for i in [positive[query], *negative[query]]
        ]
        for slot, path in enumerate(paths):
            expected = load_image(path, (45, 60)).numpy()
            np.testing.assert_allclose(images[b, slot].numpy(), expected, atol=1e-3)
