"""Saliency heatmaps of descriptor similarity with tf-keras-vis.

Four methods explain `s = <f(image), reference>` (see `sare_tf.saliency.scores`):

- "saliency": vanilla gradients |ds/dx|, max over colour channels (Simonyan et al. 2014).
- "smoothgrad": the same averaged over noisy copies of the image (Smilkov et al. 2017).
- "gradcam++": Grad-CAM++ on a convolutional feature map (Chattopadhay et al. 2018).
- "scorecam": Score-CAM, which masks the image with each upsampled activation map and
  weights the maps by the resulting scores (Wang et al. 2020); gradient-free.

Score-CAM weights. tf-keras-vis weights the map of channel k by the softmax of the model output
for the image masked by that map, as the reference Score-CAM code weights it by the class
probability. Here the output is `[z, -z]` with `z = (s_k - s) / (2 T)`, s_k the similarity of
the masked image and s that of the whole image, so the weight is `sigmoid((s_k - s) / T)`: 1/2
for a mask that keeps the whole image's similarity, towards 1 when the mask raises it and 0
when it destroys it. The temperature T (`scorecam_temperature`, 0.1) matters: similarities of
unit descriptors differ by hundredths between masks, so at T = 1 all weights are nearly
equal and the map shows where features are strong whatever the reference image.

The CAM methods read the target layer's feature map, by default the layer feeding NetVLAD
(conv5_3 for VGG16), which is why they need a Keras model rather than a SavedModel.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.scorecam import Scorecam

from sare_tf.saliency.model_access import (
    as_embedding_model,
    check_target_layer,
    default_target_layer,
    float32_clone,
    is_savedmodel_backed,
)
from sare_tf.saliency.scores import similarity_model, similarity_score
from sare_tf.saliency.settings import CAM_METHODS, GRADIENT_METHODS, METHODS

# Score-CAM holds three [channels, B, H, W, 3] float32 arrays (tiled images, masks, masked
# images); queries are processed in chunks that keep them under this size.
SCORECAM_MEMORY_BYTES = 1 << 30
# Images per model.predict batch for Score-CAM (rounded up to a multiple of the queries).
_SCORECAM_PREDICT_IMAGES = 32
# embedding model -> {number of references: similarity model}: repeated calls on one model
# reuse its similarity models (and Score-CAM's traced predict function).
_SIMILARITY_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Similarities this close to 1 are an image against its own descriptor (float32 rounding).
_AT_MAXIMUM = 1e-6


def _check_settings(method, batch_size, smooth_samples, scorecam_temperature) -> None:
    if method not in METHODS:
        raise ValueError(
            f"Unknown saliency method. Expected one of {METHODS}. Received: method={method!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    if not (np.isfinite(scorecam_temperature) and scorecam_temperature > 0):
        raise ValueError(
            "`scorecam_temperature` must be a positive number. "
            f"Received: scorecam_temperature={scorecam_temperature!r}"
        )
    if method == "smoothgrad" and (not isinstance(smooth_samples, int) or smooth_samples < 1):
        raise ValueError(
            f"`smooth_samples` must be a positive integer. Received: smooth_samples={smooth_samples!r}"
        )


def saliency_maps(
    model,
    images,
    reference_descriptors,
    method: str = "gradcam++",
    layer_name: str | None = None,
    batch_size: int = 8,
    smooth_samples: int = 20,
    smooth_noise: float = 0.2,
    scorecam_max_channels: int | None = None,
    scorecam_temperature: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Heatmaps of the image regions that make each image similar to its reference.

    The explained score of image i is `s_i = <f(images[i]), reference_descriptors[i]>`, the
    dot product of unit descriptors that retrieval ranks by. Under a mixed precision policy
    the model is rebuilt in float32 first (Grad-CAM++ fails on bfloat16 activations).

    An image explained against its own descriptor is at the maximum s = 1, where the
    gradients of the normalised descriptor vanish: the gradient methods and Grad-CAM++ then
    show rounding noise, and a warning says so (also when an untrained model gives every
    image nearly the same descriptor); Score-CAM still works.

    Args:
        model: an embedding model (image -> descriptor), a tuple model wrapping one, a model
            loaded from a SavedModel by `sare_tf.saliency.load_model`, or the object returned
            by `tf.saved_model.load`. SavedModels support "saliency" and "smoothgrad" only.
        images: `[B, H, W, 3]` (or one `[H, W, 3]`) RGB float in [0, 255].
        reference_descriptors: `[B, D]` (one per image) or `[D]` (shared) descriptors, e.g.
            of each query's top retrieved database image.
        method: one of "gradcam++", "scorecam", "saliency", "smoothgrad".
        layer_name: feature map for the CAM methods; None picks the layer feeding NetVLAD
            (`block5_conv3` for VGG16).
        batch_size: images explained per tf-keras-vis call.
        smooth_samples: noisy copies per image for "smoothgrad".
        smooth_noise: SmoothGrad noise std as a fraction of each image's value range.
        scorecam_max_channels: Faster Score-CAM: use only this many highest-variance
            channels (None: all channels, capped to fit `SCORECAM_MEMORY_BYTES` per image).
        scorecam_temperature: T of the Score-CAM weights `sigmoid((s_k - s) / T)` (see the
            module docstring).
        seed: seed of the SmoothGrad noise.

    Returns:
        `[B, H, W]` float32 heatmaps in [0, 1], each scaled so its minimum is 0 and its
        maximum 1 (an all-constant map, where the score does not depend on the image,
        comes back as zeros with a warning).

    Example:
        >>> maps = saliency_maps(model, images, db_descriptors[top1], method="gradcam++")
    """
    _check_settings(method, batch_size, smooth_samples, scorecam_temperature)
    embedding = as_embedding_model(model)
    check_method_supported(embedding, method)
    images = _as_image_batch(images)
    references = _as_references(reference_descriptors, len(images))
    embedding = float32_clone(embedding)
    if method in CAM_METHODS:
        layer_name = check_target_layer(
            embedding, layer_name if layer_name is not None else default_target_layer(embedding)
        )
    elif layer_name is not None:
        raise ValueError(
            f"`layer_name` applies to {CAM_METHODS} only; method={method!r} explains the input "
            f"pixels. Received: layer_name={layer_name!r}"
        )

    chunk = batch_size
    max_channels = scorecam_max_channels
    if method == "scorecam":
        chunk, max_channels = _scorecam_budget(
            embedding, layer_name, images.shape, batch_size, max_channels
        )

    explainer = _Explainer(
        embedding,
        method,
        layer_name,
        smooth_samples,
        smooth_noise,
        max_channels,
        scorecam_temperature,
    )
    raw, similarity = [], []
    with _numpy_seed(seed):
        for start in range(0, len(images), chunk):
            stop = start + chunk
            chunk_maps, chunk_similarity = explainer(images[start:stop], references[start:stop])
            raw.append(chunk_maps)
            similarity.append(chunk_similarity)
    raw = np.concatenate(raw, axis=0)
    at_maximum = np.flatnonzero(np.concatenate(similarity) > 1.0 - _AT_MAXIMUM)
    if method != "scorecam" and at_maximum.size:
        warnings.warn(
            f"Images {at_maximum.tolist()} have similarity s = 1 to their reference (their own "
            "descriptor, or a model whose descriptors hardly differ, e.g. an untrained one): "
            f"the gradient of s vanishes there, so the {method} maps show rounding noise. "
            "Score-CAM does not depend on that gradient.",
            stacklevel=2,
        )
    if raw.shape[1:] != images.shape[1:3]:
        # scipy's zoom can round a CAM to one pixel off the input size.
        raw = tf.image.resize(raw[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()
    return normalize_maps(raw, method=method)


def check_method_supported(model, method: str) -> None:
    """Raises a ValueError naming `method` when `model` cannot be explained by it.

    Grad-CAM++ and Score-CAM read an intermediate feature map; a SavedModel exposes only its
    image -> descriptor signature, so only the gradient methods apply to it.
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown saliency method. Expected one of {METHODS}. Received: method={method!r}"
        )
    if method in CAM_METHODS and is_savedmodel_backed(as_embedding_model(model)):
        raise ValueError(
            f"method={method!r} needs the feature map of an intermediate convolution layer, and a "
            "SavedModel only exposes image -> descriptor through its signature. Use the .keras "
            f"model for {method!r}, or one of the gradient methods {GRADIENT_METHODS}, which work "
            "through the SavedModel."
        )


class _Explainer:
    """Runs one tf-keras-vis method on chunks of images with their references."""

    def __init__(
        self, embedding, method, layer_name, smooth_samples, smooth_noise, max_channels, temperature
    ):
        self.embedding = embedding
        self.method = method
        self.layer_name = layer_name
        self.smooth_samples = smooth_samples
        self.smooth_noise = smooth_noise
        self.max_channels = max_channels
        self.temperature = temperature

    def _similarity_model(self, references):
        models = _SIMILARITY_MODELS.setdefault(self.embedding, {})
        model = models.get(len(references))
        if model is None:
            model = models[len(references)] = similarity_model(self.embedding, references)
        model.get_layer("paired_similarity").set_references(references)
        return model

    def __call__(self, images, references) -> tuple[np.ndarray, np.ndarray]:
        """Raw maps `[B, h, w]` and the similarities `[B]` of the whole images."""
        model = self._similarity_model(references)
        seed_input = tf.constant(images)
        similarity = keras.ops.convert_to_numpy(model(seed_input, training=False))[:, 0]
        if self.method in GRADIENT_METHODS:
            samples = self.smooth_samples if self.method == "smoothgrad" else 0
            try:
                maps = Saliency(model)(
                    similarity_score,
                    seed_input,
                    smooth_samples=samples,
                    smooth_noise=self.smooth_noise,
                    normalize_map=False,
                )
            except (LookupError, TypeError) as error:
                # TypeError: tf-keras-vis gets None gradients (input not connected to the score).
                raise ValueError(
                    f"Gradients of the descriptor with respect to the image are not available "
                    f"for model {self.embedding.name!r} (method={self.method!r}): {error}"
                ) from error
        elif self.method == "gradcam++":
            maps = GradcamPlusPlus(model)(
                similarity_score,
                seed_input,
                penultimate_layer=self.layer_name,
                seek_penultimate_conv_layer=False,
                normalize_cam=False,
            )
        else:
            # Offsets: the whole images' similarities; scale 1 / (2 T): softmax([z, -z])[0]
            # is then sigmoid((s_k - s) / T) for the image masked by channel k's map.
            model.get_layer("paired_similarity").set_references(
                references, offsets=similarity, scale=0.5 / self.temperature
            )
            rows = len(references)
            predict_batch = rows * max(1, -(-_SCORECAM_PREDICT_IMAGES // rows))
            with _quiet_predict(model):
                maps = Scorecam(model)(
                    similarity_score,
                    seed_input,
                    penultimate_layer=self.layer_name,
                    seek_penultimate_conv_layer=False,
                    batch_size=predict_batch,
                    max_N=self.max_channels,
                    normalize_cam=False,
                )
        maps = np.asarray(maps, dtype="float64").reshape(len(images), *np.shape(maps)[-2:])
        return maps, similarity


def normalize_maps(maps, method: str = "") -> np.ndarray:
    """Min-max scales each `[H, W]` map of `[B, H, W]` to [0, 1] (float32).

    tf-keras-vis adds a fixed 1e-7 to the range, which flattens maps whose raw values are
    tiny (gradients of a unit descriptor often are); this scales by the range itself.

    Raises:
        ValueError: when a map holds NaN or infinite values.
    """
    maps = np.asarray(maps, dtype="float64")
    bad = ~np.all(np.isfinite(maps.reshape(len(maps), -1)), axis=1)
    if np.any(bad):
        raise ValueError(
            f"Saliency ({method or 'maps'}) produced NaN or infinite values for images "
            f"{np.flatnonzero(bad).tolist()}."
        )
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    span = high - low
    scale = np.maximum(np.abs(high), np.abs(low))
    constant = (span <= 1e-9 * scale) | (span == 0)
    if np.any(constant):
        warnings.warn(
            f"Saliency ({method or 'maps'}) is constant for images "
            f"{np.flatnonzero(constant.ravel()).tolist()}: the score does not depend on the image "
            "there; returning zero maps.",
            stacklevel=3,
        )
    normalized = np.where(constant, 0.0, (maps - low) / np.where(constant, 1.0, span))
    return np.clip(normalized, 0.0, 1.0).astype("float32")


def _as_image_batch(images) -> np.ndarray:
    images = np.asarray(keras.ops.convert_to_numpy(images), dtype="float32")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"`images` must be [B, H, W, 3] RGB. Received: shape={images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("`images` contain NaN or infinite values.")
    return images


def _as_references(reference_descriptors, num_images: int) -> np.ndarray:
    references = np.asarray(keras.ops.convert_to_numpy(reference_descriptors), dtype="float32")
    if references.ndim == 1:
        references = np.broadcast_to(references, (num_images, references.shape[0]))
    if references.ndim != 2 or references.shape[0] != num_images:
        raise ValueError(
            f"`reference_descriptors` must be [D] or [B={num_images}, D]. "
            f"Received: shape={references.shape}"
        )
    return np.ascontiguousarray(references)


def _scorecam_budget(embedding, layer_name, image_shape, batch_size, max_channels):
    """Queries per chunk and channels for Score-CAM within `SCORECAM_MEMORY_BYTES`."""
    channels = int(embedding.get_layer(layer_name).output.shape[-1])
    if max_channels is not None:
        if not isinstance(max_channels, int) or not 1 <= max_channels <= channels:
            raise ValueError(
                f"`scorecam_max_channels` must be an integer in [1, {channels}] for layer "
                f"{layer_name!r}. Received: scorecam_max_channels={max_channels!r}"
            )
        channels = max_channels
    bytes_per_channel = 3 * int(np.prod(image_shape[1:])) * 4
    if channels * bytes_per_channel > SCORECAM_MEMORY_BYTES:
        fitted = max(1, SCORECAM_MEMORY_BYTES // bytes_per_channel)
        warnings.warn(
            f"Score-CAM over {channels} channels of {layer_name!r} at {image_shape[1]}x"
            f"{image_shape[2]} would need {channels * bytes_per_channel / 2**20:.0f} MiB per "
            f"image (budget {SCORECAM_MEMORY_BYTES / 2**20:.0f} MiB); using the {fitted} "
            "highest-variance channels (Faster Score-CAM).",
            stacklevel=3,
        )
        channels = max_channels = fitted
    if max_channels is not None:
        # tf-keras-vis picks the highest-variance channels of a whole batch (the union of each
        # image's picks); one image per call keeps every image's map independent of the batch.
        return 1, max_channels
    chunk = max(1, min(batch_size, SCORECAM_MEMORY_BYTES // (channels * bytes_per_channel)))
    return chunk, max_channels


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """Seeds numpy's global RNG (tf-keras-vis draws SmoothGrad noise from it) and restores it."""
    state = np.random.get_state()  # noqa: NPY002 (tf-keras-vis uses the legacy global RNG)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


@contextlib.contextmanager
def _quiet_predict(model):
    """Silences the progress bar of the model.predict call inside tf-keras-vis's Score-CAM."""
    predict = model.predict
    model.predict = lambda *args, **kwargs: predict(*args, **{"verbose": 0, **kwargs})
    try:
        yield
    finally:
        del model.predict
