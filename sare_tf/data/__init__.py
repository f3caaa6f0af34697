"""Geo-tagged datasets, image decoding, the synthetic city and the tf.data tuple pipeline.

Importing this package does not import TensorFlow; `images` and `tuples` do.
"""

from sare_tf.data.dbstruct import read_dbstruct, write_dbstruct
from sare_tf.data.geo_dataset import GeoDataset, check_relative_path, radius_neighbours

__all__ = [
    "GeoDataset",
    "check_relative_path",
    "radius_neighbours",
    "read_dbstruct",
    "write_dbstruct",
]
