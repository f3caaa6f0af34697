"""Former home of the model builders, kept so that `from sare_tf.models import ...` still works.

Everything here lives in `sare_tf.model` now (`PlaceEmbedding`, the task models, the backbone
registry); import from there.
"""

from sare_tf.model import (  # noqa: F401
    BACKBONES,
    BackboneSpec,
    build_embedding_model,
    build_tuple_model,
    embedding_of,
    feature_model,
    fit_pca_whitening_layer,
    freeze_before,
    netvlad_layer,
    with_pca_whitening,
)
