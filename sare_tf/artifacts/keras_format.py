"""The `.keras` format: a Keras 3 archive (zip of config.json and model.weights.h5).

A sare_tf `.keras` file holds a `PlaceEmbedding` (or a task model wrapping one, as training
checkpoints do: it is unwrapped). Files written before `PlaceEmbedding` existed hold the same
graph as a plain functional model and are upgraded on load. Saving is atomic
(`sare_tf.atomic.save_model_atomic`).
"""

from __future__ import annotations

import os
import zipfile

import keras

from sare_tf.artifacts.descriptor_model import (
    DescriptorModel,
    compute_precision,
    describe_model,
    set_inference_precision,
    stored_image_size,
)
from sare_tf.artifacts.versions import version_label
from sare_tf.atomic import save_model_atomic
from sare_tf.hashing import arrays_fingerprint
from sare_tf.model import embedding_of, upgrade_functional

KERAS_SUFFIX = ".keras"


def not_a_keras_file(folder: str) -> str:
    """What to say when a folder is given where a `.keras` file is needed (an export, a run)."""
    candidates = sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(folder)
        for name in files
        if name.endswith(KERAS_SUFFIX)
    )
    versions = [c for c in candidates if os.path.basename(c)[: -len(KERAS_SUFFIX)].isdigit()]
    best = [c for c in candidates if os.path.basename(c) == "best.keras"]
    beside = os.path.normpath(folder) + KERAS_SUFFIX  # sare-tf export's copy of a version
    if os.path.isfile(beside):
        versions.append(beside)
    suggestion = (versions[-1:] or best[:1] or candidates[:1] or [None])[0]
    kind = (
        "a SavedModel (an export)"
        if os.path.isfile(os.path.join(folder, "saved_model.pb"))
        else "a folder"
    )
    text = f"{folder} is {kind}; this needs the .keras model file (sare-tf train writes best.keras, sare-tf export a NAME/VERSION.keras beside each version)."
    if suggestion:
        text += f" Found one: {suggestion}"
    return text


def read_keras_model(path, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` file written by sare_tf (or any Keras 3 model), refusing what is not one.

    A task-model checkpoint is unwrapped to its embedding model, and a plain functional sare_tf
    model of an older version becomes a `PlaceEmbedding`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a `.keras` archive (a zip with `config.json`), or Keras cannot
            rebuild the model from it (the message names the file and Keras's reason).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(not_a_keras_file(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        names = set()
    if "config.json" not in names:
        raise ValueError(
            f"{path} is not a valid .keras file: a .keras model is a zip archive holding "
            "config.json and model.weights.h5."
        )
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ValueError(f"{path}: the .keras file could not be loaded: {error}") from error
    if (len(model.inputs) == 1 and len(model.inputs[0].shape) == 5) or hasattr(model, "embedding"):
        model = embedding_of(model)
    return upgrade_functional(model)


class KerasFormat:
    """`.keras` files."""

    name = "keras"
    save = staticmethod(save_model_atomic)

    @staticmethod
    def detect(path: str) -> str | None:
        return path if os.path.isfile(path) and path.endswith(KERAS_SUFFIX) else None

    @staticmethod
    def load(path: str, precision: str | None = None, safe_mode: bool = True) -> DescriptorModel:
        model = read_keras_model(path, safe_mode=safe_mode)
        if precision is not None:
            set_inference_precision(model, precision)
        return DescriptorModel(
            model, version_label(path), path, "keras", stored_image_size(model),
            compute_precision(model),
        )  # fmt: skip

    @staticmethod
    def describe(loaded: DescriptorModel) -> dict:
        return describe_model(loaded.model)

    @staticmethod
    def fingerprint(loaded: DescriptorModel) -> str:
        return weights_fingerprint(loaded.model)


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of a Keras model's weights (shapes and values, in order): "sha256:<hex>"."""
    fingerprint = getattr(model, "fingerprint", None)
    if isinstance(fingerprint, str):
        return fingerprint
    return arrays_fingerprint(weight.numpy() for weight in model.weights)
