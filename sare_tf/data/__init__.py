"""Geo-tagged datasets, their readers, image decoding and the tf.data tuple pipeline.

(The synthetic city lives in `sare_tf.synthetic`.) Names load on first use
(`sare_tf.lazy_exports`), except the readers: importing the package registers them with
`GeoDataset` (`GeoDataset.load` and friends find them by name), without importing TensorFlow.
"""

from __future__ import annotations

import sare_tf.data.loading  # noqa: F401  (registers the dataset readers)
from sare_tf.lazy_exports import lazy_exports
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "dbstruct": ("read_dbstruct", "write_dbstruct"),
        "geo_dataset": ("GeoDataset", "check_relative_path", "radius_neighbours"),
        "loading": ("load_dataset",),
        "tuples": ("MiningState", "make_tuple_dataset", "random_tuples", "default_augmentation"),
        "images": ("decode_rgb", "resize_image", "load_image", "read_rgb", "safe_load_image", "BadImageError"),
        "checks": ("BadImageLog", "ImageCheckReport", "check_images", "check_dataset"),
    },
)
