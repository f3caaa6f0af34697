"""The place index and what answers from it: data flow's step after the model and its artifacts.

- `config`: `IndexConfig`, the faiss index settings that travel as one object (and make the
  commands' index flags);
- `faiss_search`: faiss indexes built from an `IndexConfig` (factory strings, `ParameterSpace`
  knobs) and blocked exact-tie-ordered search; evaluation searches with it too.
- `store`: `PlaceIndex`, descriptors + positions + paths + the model's fingerprint on disk.
- `localize`: photos -> "where was this taken?" answers; `report`: their HTML page.
- `hloc_files`: handing a retrieval to hloc.

Names load on first use (`sare_tf.lazy_exports`).
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "config": ("INDEX_TYPES", "IndexConfig"),
        "faiss_search": ("build_index", "search", "search_index"),
        "store": ("IndexMismatchError", "PlaceIndex", "consensus"),
    },
)
