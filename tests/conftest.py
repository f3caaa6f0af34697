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
