"""Hard-negative mining: the pure tuple-mining function and the Keras callback that refreshes
the training pipeline's mining state with it.

`mine_tuples` (numpy in, numpy out) is importable without TensorFlow; `HardNegativeMining`
(a `keras.callbacks.Callback`) and its `MiningSettings` are loaded on first use.
"""

from __future__ import annotations

import importlib

from sare_tf.mining.hard_negatives import NO_INDEX, mine_tuples
from sare_tf.mining.policies import FullRefresh, PartialRefresh, RefreshPolicy, get_policy

__all__ = [
    "NO_INDEX",
    "FullRefresh",
    "HardNegativeMining",
    "MiningSettings",
    "PartialRefresh",
    "RefreshPolicy",
    "get_policy",
    "mine_tuples",
]


def __getattr__(name: str):
    if name in ("HardNegativeMining", "MiningSettings"):
        return getattr(importlib.import_module("sare_tf.mining.callback"), name)
    raise AttributeError(f"module 'sare_tf.mining' has no attribute {name!r}")
