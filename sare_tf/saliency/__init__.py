"""Saliency heatmaps of descriptor similarity (tf-keras-vis), and the PNG panels of Fig. 7.

Reference: Liu, Li, Dai, "Deep Stochastic Attraction and Repulsion Embedding for Image Based
Localization", ICCV 2019, Fig. 7.

Names load on first use (`sare_tf.lazy_exports`).
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "maps": ("METHODS", "check_method_supported", "normalize_maps", "saliency_maps"),
        "model_access": (
            "SavedModelSignature",
            "default_target_layer",
            "float32_clone",
            "load_model",
            "model_from_savedmodel",
        ),
        "panels": ("Panel", "PanelRow", "write_panels"),
        "scores": ("PairedSimilarity", "similarity_model", "similarity_score"),
    },
)
