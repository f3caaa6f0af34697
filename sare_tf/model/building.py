"""Building place-embedding models, adding PCA whitening, and finding the embedding in a model."""

from __future__ import annotations

import keras

from sare_tf.layers import BoQ, CRNNetVLAD, GeM, NetVLAD, PCAWhitening, Salad
from sare_tf.model.place_embedding import PlaceEmbedding, copy_layer_weights
from sare_tf.registry import AGGREGATOR_NAMES


def aggregator_layer(aggregator: str, backbone: str, num_clusters: int = 64, fc_dim=None):
    """The aggregator layer named `aggregator` (`sare_tf.registry.AGGREGATOR_NAMES`) with the
    settings of the method it comes from; `fc_dim` is the projection of gem and salad only."""
    if aggregator not in AGGREGATOR_NAMES:
        raise ValueError(
            f"Unknown aggregator. Expected one of {AGGREGATOR_NAMES}. Received: aggregator={aggregator!r}"
        )
    if fc_dim is not None and aggregator not in ("gem", "salad"):
        raise ValueError(
            f"`fc_dim` is the projection of gem and salad; {aggregator} has none. "
            f"Received: fc_dim={fc_dim}"
        )
    if aggregator == "salad" and not backbone.endswith("-tokens"):
        raise ValueError(
            "salad aggregates [CLS] + patch tokens: use a '-tokens' backbone (e.g. "
            f"dinov2-vitb14-tokens). Received: backbone={backbone!r}"
        )
    if aggregator in ("netvlad", "crn-netvlad"):
        return (NetVLAD if aggregator == "netvlad" else CRNNetVLAD)(num_clusters, name="netvlad")
    if aggregator == "gem":
        return GeM(fc_dim, name="gem")
    if aggregator == "boq":  # the authors': 64 queries, 2 blocks, 32 rows, C 512 / 384 (ViT)
        return BoQ(384 if backbone.startswith("dinov2") else 512, name="boq")
    # MegaLoc's settings: 64 clusters of 256, a 256-d scene token, + FC to fc_dim if given.
    return Salad(output_dim=fc_dim, name="salad")


def build_embedding_model(
    backbone: str = "vgg16",
    num_clusters: int = 64,
    pca_dim: int | None = None,
    aggregator: str = "netvlad",
    fc_dim: int | None = None,
    weights: str | None = None,
    trainable_from: str | None = "default",
    input_shape: tuple = (None, None, 3),
    name: str | None = None,
) -> PlaceEmbedding:
    """Builds image -> descriptor: cropped backbone, aggregator, optional PCA whitening, L2.

    Args:
        backbone: a key of `BACKBONES` ("vgg16", "resnet50", "tiny", ...).
        num_clusters: K of NetVLAD; the descriptor has `K * D` dims (D = backbone channels).
        pca_dim: add a `PCAWhitening` layer to this size (fit it with `fit_pca_whitening_layer`).
        aggregator: "netvlad", "crn-netvlad" (NetVLAD reweighted by CRN), "gem", "boq" or
            "salad" (MegaLoc's, on a "-tokens" backbone) (`sare_tf.registry.AGGREGATOR_NAMES`);
            BoQ with
            the authors' settings (512 channels, 384 on DINOv2; 64 queries, 2 blocks, 32 rows).
        fc_dim: the fully connected output size of GeM (CosPlace's `fc_output_dim`; None keeps
            the D pooled channels) or of salad (MegaLoc: 8448; None: no projection).
        weights: None (random), "imagenet" (Keras downloads them) or a local weights file.
        trainable_from: first trainable backbone layer; earlier ones are frozen. "default" uses
            the backbone's default ("block5_conv1" for VGG16), None makes everything trainable.
        input_shape: `(H, W, 3)`, None for any size.
        name: model name.

    Returns:
        A `PlaceEmbedding` with input "image" (float32 RGB 0-255) and a float32 unit-norm
        descriptor output.

    Example:
        >>> model = build_embedding_model("tiny", num_clusters=4, input_shape=(64, 64, 3))
        >>> model.output_shape
        (None, 512)
    """
    pooling = aggregator_layer(aggregator, backbone, num_clusters, fc_dim)
    default_name = f"{backbone}_{aggregator}" + (
        f"{num_clusters}" if isinstance(pooling, NetVLAD) else f"{fc_dim or ''}"
    )
    whitening = None if pca_dim is None else PCAWhitening(pca_dim, name="pca_whitening")
    return PlaceEmbedding(
        backbone,
        aggregator=pooling,
        whitening=whitening,
        trainable_from=trainable_from,
        weights=weights,
        input_shape=input_shape,
        name=name or default_name.replace("-", "_"),
    )


def embedding_of(model: keras.Model) -> keras.Model:
    """The embedding model inside a task model (`.embedding`), or the model itself.

    Plain functional models (custom backbones, files of older versions not upgraded) are
    searched for the nested model holding NetVLAD.
    """
    if isinstance(model, PlaceEmbedding):
        return model
    nested = getattr(model, "embedding", None)
    if isinstance(nested, keras.Model):
        return nested
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(isinstance(sub, NetVLAD) for sub in layer.layers):
            return layer
    if any(isinstance(layer, NetVLAD) for layer in model.layers):
        return model
    raise ValueError(f"No NetVLAD layer found in model {model.name!r}.")


def needs_cluster_init(model: keras.Model) -> bool:
    """True while the model's aggregator is a NetVLAD whose clusters are still to be set from
    data (`sare_tf.cluster_init`); GeM and other aggregators start from their initialisers."""
    embedding = embedding_of(model) if not isinstance(model, PlaceEmbedding) else model
    aggregator = getattr(embedding, "aggregator", None)
    if aggregator is None:
        aggregator = netvlad_layer(embedding)
    return isinstance(aggregator, NetVLAD) and not aggregator.is_initialized


def netvlad_layer(model: keras.Model) -> NetVLAD:
    """The NetVLAD layer of an embedding model (or of a task model wrapping one)."""
    return embedding_of(model).get_layer("netvlad")


def feature_model(model: keras.Model) -> keras.Model:
    """image -> the cropped backbone's local feature map `[B, h, w, D]` (the NetVLAD input)."""
    embedding = embedding_of(model)
    if isinstance(embedding, PlaceEmbedding):
        return embedding.feature_model()
    return keras.Model(
        embedding.input, embedding.get_layer("netvlad").input, name=f"{embedding.name}_features"
    )


def fit_pca_whitening_layer(
    model: keras.Model, descriptors, max_samples: int = 10_000, seed: int = 0
) -> None:
    """Fits the model's `pca_whitening` layer on NetVLAD descriptors `[M, K*D]`."""
    embedding_of(model).get_layer("pca_whitening").adapt(
        descriptors, max_samples=max_samples, seed=seed
    )


def with_pca_whitening(
    model: keras.Model, descriptors, pca_dim: int, max_samples: int = 10_000, seed: int = 0
) -> keras.Model:
    """A new embedding model with a fitted `PCAWhitening` after NetVLAD.

    The result holds copies of every weight of `model` up to "netvlad", then a
    `PCAWhitening(pca_dim)` fitted on `descriptors` and a float32 "descriptor" output, as
    `build_embedding_model(..., pca_dim=pca_dim)` followed by `fit_pca_whitening_layer` would.

    Args:
        model: an embedding model without PCA whitening (or a task model wrapping one).
        descriptors: `[M, K*D]` NetVLAD descriptors (the "netvlad" layer's output) to fit on.
        pca_dim: size of the whitened descriptor.
        max_samples: at most this many descriptors are used for the fit.
        seed: subset seed.

    Returns:
        A model image -> `[B, pca_dim]` unit-norm descriptor (a `PlaceEmbedding` when `model`
        is one).
    """
    embedding = embedding_of(model)
    if any(isinstance(layer, PCAWhitening) for layer in embedding.layers):
        raise ValueError(
            f"Model {embedding.name!r} already has a PCA whitening layer. Received: pca_dim={pca_dim}"
        )
    pca = PCAWhitening(pca_dim, name="pca_whitening")
    pca.adapt(descriptors, max_samples=max_samples, seed=seed)
    name = f"{embedding.name}_pca{pca_dim}"
    if not isinstance(embedding, PlaceEmbedding):
        whitened = pca(embedding.get_layer("netvlad").output)
        descriptor = keras.layers.Activation("linear", dtype="float32", name="descriptor")(whitened)
        return keras.Model(embedding.input, descriptor, name=name)
    config = embedding.get_config()
    config.update(name=name, whitening=keras.saving.serialize_keras_object(pca))
    whitened_model = PlaceEmbedding.from_config(config)
    copy_layer_weights(embedding, whitened_model)
    whitened_model.get_layer("pca_whitening").set_weights(pca.get_weights())
    return whitened_model
