"""Shared test fixtures. Tests never touch the network; data is made in fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest


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
    from sare_tf.data.synthetic import make_synthetic_city

    root = tmp_path_factory.mktemp("tiny_city")
    mats = make_synthetic_city(root, preset="tiny", seed=0)
    return {**mats, "root": str(root)}
