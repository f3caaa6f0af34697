"""The place index and what answers from it: data flow's step after the model and its artifacts.

- `faiss_search`: faiss indexes built from an `IndexConfig` (factory strings, `ParameterSpace`
  knobs) and blocked exact-tie-ordered search; evaluation searches with it too.
- `store`: `PlaceIndex`, descriptors + positions + paths + the model's fingerprint on disk.
- `localize`: photos -> "where was this taken?" answers; `report`: their HTML page.
- `hloc_files`: handing a retrieval to hloc.
"""

from sare_tf.index.faiss_search import IndexConfig, build_index, search, search_index
from sare_tf.index.store import IndexMismatchError, PlaceIndex, consensus

__all__ = [
    "IndexConfig",
    "IndexMismatchError",
    "PlaceIndex",
    "build_index",
    "consensus",
    "search",
    "search_index",
]
