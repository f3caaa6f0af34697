"""Task models: what training fits around a place-embedding model, never what it saves.

- `TupleModel`: `[B, 2+N, H, W, 3]` (query, positive, N negatives) -> `[B, 2+N, D]`, running the
  embedding model once on the `B * (2+N)` images, for the tuple losses.
- `GeoClassifier`: image -> embedding -> a softmax head over 25 m cells (logits), for geographic
  classification (Vo et al., as the SARE paper's appendix sets it up).

Both share the embedding model (training them trains it) and expose it as `.embedding`, the
only part a run saves or exports.
"""

from __future__ import annotations

import keras

from sare_tf.layers import FoldTuples, UnfoldTuples


def _embedding_from_config(config: dict, custom_objects=None) -> dict:
    config = dict(config)
    config["embedding"] = keras.saving.deserialize_keras_object(
        config["embedding"], custom_objects=custom_objects
    )
    return config


@keras.saving.register_keras_serializable(package="sare_tf")
class TupleModel(keras.Model):
    """Embeds (query, positive, N negatives) tuples with one embedding model.

    Args:
        embedding: the image -> descriptor model.
        num_negatives: N; tuples hold `2 + N` images.
        **kwargs: `keras.Model` arguments (`name`).
    """

    def __init__(self, embedding: keras.Model, num_negatives: int = 10, **kwargs):
        if (
            isinstance(num_negatives, bool)
            or not isinstance(num_negatives, int)
            or num_negatives < 1
        ):
            raise ValueError(
                f"`num_negatives` must be a positive integer. Received: num_negatives={num_negatives!r}"
            )
        tuple_size = 2 + num_negatives
        inputs = keras.Input(
            shape=(tuple_size, *embedding.input_shape[1:]), dtype="float32", name="tuple_images"
        )
        descriptors = embedding(FoldTuples(name="fold_tuples")(inputs))
        outputs = UnfoldTuples(tuple_size, name="unfold_tuples", dtype="float32")(descriptors)
        kwargs.setdefault("name", "tuple_model")
        super().__init__(inputs, outputs, **kwargs)
        self.embedding = embedding
        self.num_negatives = num_negatives

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            "num_negatives": self.num_negatives,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_embedding_from_config(config, custom_objects))


@keras.saving.register_keras_serializable(package="sare_tf")
class GeoClassifier(keras.Model):
    """image -> embedding -> Dense(num_cells) logits (float32), for training only.

    The head's kernel starts as 0.01 x N(0, 1) and its bias at zero (the appendix's setting).

    Args:
        embedding: the image -> descriptor model (shared, not copied).
        num_cells: the number of non-empty 25 m cells (at least 2).
        seed: seed of the head's initial kernel.
        **kwargs: `keras.Model` arguments (`name`).
    """

    def __init__(self, embedding: keras.Model, num_cells: int, seed: int = 0, **kwargs):
        if int(num_cells) < 2:
            raise ValueError(
                f"Geographic classification needs at least 2 non-empty cells. Received: {num_cells}"
            )
        image = keras.Input(shape=embedding.input_shape[1:], name="image")
        head = keras.layers.Dense(
            int(num_cells),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seed),
            bias_initializer="zeros",
            dtype="float32",
            name="geo_head",
        )
        kwargs.setdefault("name", "geo_classifier")
        super().__init__(image, head(embedding(image)), **kwargs)
        self.embedding = embedding
        self.num_cells = int(num_cells)
        self.seed = seed

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            "num_cells": self.num_cells,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_embedding_from_config(config, custom_objects))


def build_tuple_model(
    embedding_model: keras.Model, num_negatives: int = 10, name: str = "tuple_model"
) -> TupleModel:
    """The `TupleModel` of `embedding_model` for tuples of `2 + num_negatives` images."""
    return TupleModel(embedding_model, num_negatives, name=name)


def build_geo_classifier(
    embedding_model: keras.Model, num_cells: int, seed: int = 0
) -> GeoClassifier:
    """The `GeoClassifier` of `embedding_model` over `num_cells` cells."""
    return GeoClassifier(embedding_model, num_cells, seed=seed)
