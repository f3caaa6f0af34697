"""The place-embedding model and the task models training fits around it.

- the backbones it knows are data in `sare_tf.registry` (names, crops, pixel modes);
- `backbones`: their Keras graphs;
- `place_embedding`: `PlaceEmbedding`, image -> descriptor, a model that knows itself;
- `tasks`: `TupleModel` and `GeoClassifier`, for the tuple losses and geographic classification;
- `building`: `build_embedding_model`, PCA whitening added to a trained model, and the questions
  asked of any model (its embedding inside a task model, its NetVLAD layer, its feature map).
"""

from sare_tf.model.building import (
    aggregator_layer,
    build_embedding_model,
    embedding_of,
    feature_model,
    fit_pca_whitening_layer,
    needs_cluster_init,
    netvlad_layer,
    with_pca_whitening,
)
from sare_tf.model.place_embedding import PlaceEmbedding, freeze_before, upgrade_functional
from sare_tf.model.tasks import GeoClassifier, TupleModel, build_geo_classifier, build_tuple_model
from sare_tf.registry import BACKBONE_NAMES, BACKBONES, BackboneSpec, backbone_spec

__all__ = [
    "aggregator_layer",
    "BACKBONES",
    "BACKBONE_NAMES",
    "BackboneSpec",
    "GeoClassifier",
    "PlaceEmbedding",
    "TupleModel",
    "backbone_spec",
    "build_embedding_model",
    "build_geo_classifier",
    "build_tuple_model",
    "embedding_of",
    "feature_model",
    "fit_pca_whitening_layer",
    "freeze_before",
    "needs_cluster_init",
    "netvlad_layer",
    "upgrade_functional",
    "with_pca_whitening",
]
