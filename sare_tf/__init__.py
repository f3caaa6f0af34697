"""sare_tf: NetVLAD descriptors trained with the SARE loss family for image-based localization.

Importing the package is cheap and has no side effects beyond quietening TensorFlow's C++
start-up chatter (only when the user has not set ``TF_CPP_MIN_LOG_LEVEL``). Submodules
(``sare_tf.layers``, ``sare_tf.losses``, ``sare_tf.models``, ...) are imported on first use.
"""

from __future__ import annotations

import importlib
import os

from sare_tf._version import __version__

# TensorFlow prints CUDA probing lines at import on CPU-only hosts; they are noise for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_SUBMODULES = (
    "bench",
    "cluster_init",
    "data",
    "evaluation",
    "export",
    "hardware",
    "layers",
    "losses",
    "mining",
    "models",
    "precision",
    "saliency",
    "training",
)

__all__ = ["__version__", "set_precision", *_SUBMODULES]


def set_precision(policy: str = "auto", force: bool = False) -> str:
    """Sets the global Keras dtype policy; see `sare_tf.precision.set_precision`."""
    from sare_tf.precision import set_precision as _set_precision

    return _set_precision(policy, force=force)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"sare_tf.{name}")
    raise AttributeError(f"module 'sare_tf' has no attribute {name!r}")
