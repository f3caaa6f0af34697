"""Shared test fixtures. Tests never touch the network; data is made in fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _share_the_cores_between_test_workers() -> None:
    """Under pytest-xdist (`pytest -n N`) each worker sizes TensorFlow's and PyTorch's thread
    pools for its share of the cores, not for the whole machine: N workers each running as many
    threads as there are cores would fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores_between_test_workers()

# Imported before Keras so that TensorFlow starts with the settings sare_tf chooses for it
# (its pooling CPU allocator), as in a user's process.
import sare_tf  # noqa: F401, I001

import keras
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    """Every test starts in float32 with seeded Keras RNGs, and leaves the policy as it found it."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """The 'tiny' synthetic city (a few hundred 60x80 JPEGs, seed 0), made once per test session.

    Returns:
        `{"train": mat, "val": mat, "test": mat, "root": image_root}`; load a split with
        `GeoDataset.from_dbstruct(tiny_city["train"])`. Treat the files as read-only.
    """
    from sare_tf.synthetic.city import make_synthetic_city

    root = tmp_path_factory.mktemp("tiny_city")
    mats = make_synthetic_city(root, preset="tiny", seed=0)
    return {**mats, "root": str(root)}


@pytest.fixture(scope="module")
def tiny_model():
    """A random 'tiny' backbone + NetVLAD(4) embedding model, any input size, 512-d output."""
    import keras

    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(0)
    return build_embedding_model("tiny", num_clusters=4)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A random 'tiny' + NetVLAD(4) model saved as `.keras`, recording the image size 48x64
    (what an index and localize need). Treat the file as read-only."""
    from sare_tf.artifacts import store_image_size
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(1)
    model = build_embedding_model("tiny", num_clusters=4)
    store_image_size(model, (48, 64))
    path = tmp_path_factory.mktemp("tiny_model_file") / "tiny.keras"
    model.save(path)
    return str(path)


def write_jpeg(path, height, width, seed):
    """A smooth random picture (JPEG-friendly) of the given size."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    image.save(path, quality=95)
    return str(path)


@pytest.fixture(scope="session")
def jpeg_writer():
    """`write_jpeg(path, height, width, seed) -> str`."""
    return write_jpeg


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """Eight JPEGs in three sizes (48x64, 64x48, 40x40) and the folder holding them."""
    folder = tmp_path_factory.mktemp("jpegs")
    sizes = [(48, 64), (64, 48), (48, 64), (40, 40), (48, 64), (64, 48), (40, 40), (48, 64)]
    paths = [write_jpeg(folder / f"img{i}.jpg", h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    return folder, paths
