"""Saliency heatmaps of descriptor similarity (tf-keras-vis), and the PNG panels of Fig. 7.

Reference: Liu, Li, Dai, "Deep Stochastic Attraction and Repulsion Embedding for Image Based
Localization", ICCV 2019, Fig. 7.
"""

from sare_tf.saliency.maps import METHODS, check_method_supported, normalize_maps, saliency_maps
from sare_tf.saliency.model_access import (
    SavedModelSignature,
    default_target_layer,
    float32_clone,
    load_model,
    model_from_savedmodel,
)
from sare_tf.saliency.panels import Panel, PanelRow, write_panels
from sare_tf.saliency.scores import PairedSimilarity, similarity_model, similarity_score

__all__ = [
    "METHODS",
    "PairedSimilarity",
    "Panel",
    "PanelRow",
    "SavedModelSignature",
    "check_method_supported",
    "default_target_layer",
    "float32_clone",
    "load_model",
    "model_from_savedmodel",
    "normalize_maps",
    "saliency_maps",
    "similarity_model",
    "similarity_score",
    "write_panels",
]
