"""Geo-tagged datasets, their readers, image decoding and the tf.data tuple pipeline.

(The synthetic city lives in `sare_tf.synthetic`.)

Importing this package does not import TensorFlow: the names that need it (`MiningState`,
`make_tuple_dataset`, `safe_load_image`, ...) are loaded on first use.
"""

from __future__ import annotations

import importlib

from sare_tf.data.dbstruct import read_dbstruct, write_dbstruct
from sare_tf.data.geo_dataset import GeoDataset, check_relative_path, radius_neighbours
from sare_tf.data.loading import load_dataset

_LAZY = {
    "MiningState": "sare_tf.data.tuples",
    "make_tuple_dataset": "sare_tf.data.tuples",
    "random_tuples": "sare_tf.data.tuples",
    "default_augmentation": "sare_tf.data.tuples",
    "decode_rgb": "sare_tf.data.images",
    "resize_image": "sare_tf.data.images",
    "load_image": "sare_tf.data.images",
    "read_rgb": "sare_tf.data.images",
    "safe_load_image": "sare_tf.data.images",
    "BadImageError": "sare_tf.data.images",
    "BadImageLog": "sare_tf.data.checks",
    "ImageCheckReport": "sare_tf.data.checks",
    "check_images": "sare_tf.data.checks",
    "check_dataset": "sare_tf.data.checks",
}

__all__ = [
    "GeoDataset",
    "check_relative_path",
    "load_dataset",
    "radius_neighbours",
    "read_dbstruct",
    "write_dbstruct",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sare_tf.data' has no attribute {name!r}")
