"""The one encoder: images -> descriptors, batched through tf.data with bounded memory.

Mining, validation, cluster initialisation, PCA fitting, saliency and evaluation all encode
through `encode` (or `inference_function` for the traced model call), so every image is decoded,
resized and run through the model the same way.

Decoding (and resizing, cropping) runs in parallel in tf.data; the model runs on batches. With a
fixed `image_size` every image is resized and batches are plain. Without one, images keep their
size (or are shrunk to `long_side`), and images of equal size are batched together: a small
pool of pending images per size is flushed when full, so memory stays bounded whatever the mix.

Descriptors go into a preallocated float32 array, or into a `.npy` memory map on disk when
`out_path` is given (city-size maps do not fit in memory: Pitts250k is 250k x 4096 x 4 B = 4 GB).

Unreadable images (missing, empty, truncated, not an image) never stop the run: they are
counted, named in a warning, get an all-zero descriptor row, and are reported through
`return_valid=True` so that evaluation can leave them out (database) or count them as failures
(queries).
"""

from __future__ import annotations

import logging
import os
import weakref

import keras
import numpy as np
import tensorflow as tf

from sare_tf.artifacts import DescriptorModel
from sare_tf.data.images import BadImageError, read_rgb, resize_image, safe_load_image
from sare_tf.data.parallelism import PREFETCH_BATCHES, decoders, without_autotuning
from sare_tf.image_size import check_image_size
from sare_tf.progress import ProgressBar

logger = logging.getLogger("sare_tf.encoding")


def _as_boxes(boxes, count: int) -> np.ndarray | None:
    if boxes is None:
        return None
    if len(boxes) != count:
        raise ValueError(
            f"`boxes` needs one entry per image ({count}). Received: {len(boxes)} boxes"
        )
    array = np.full((count, 4), np.nan, dtype=np.float32)
    for row, box in enumerate(boxes):
        if box is not None:
            array[row] = np.asarray(box, dtype=np.float32).reshape(4)
    return array


# One traced inference function per Keras model, shared by every caller (mining, validation, the
# collapse guard, cluster initialisation): tracing a ViT costs seconds, and a training run would
# otherwise pay it in each callback and at each epoch. Keyed weakly, and the function reaches its
# model through a weak reference, so a model nobody holds any more (a replaced serving version)
# is freed with its function.
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_function(model):
    """`images [B, H, W, 3] float32 -> descriptors`: one trace of a Keras model for every size.

    Weights are read at call time, so the same function serves every extraction while the model
    trains; asking again for the same model returns the function already traced.
    """

    traced = _TRACED.get(model)
    if traced is None:
        model_ref = weakref.ref(model)
        traced = tf.function(
            lambda images: model_ref()(images, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )
        _TRACED[model] = traced
    return traced


def predict_fn(model):
    """A function `images [B, H, W, 3] float32 -> descriptors [B, D]` for a model or callable.

    A `keras.Model` is traced once (`inference_function`); a callable (a SavedModel signature, an
    already traced function) is used as it is.
    """

    if isinstance(model, keras.Model):
        return inference_function(model)
    if callable(model):
        return model
    raise ValueError(f"`model` must be a keras.Model or a callable. Received: {type(model)}")


def descriptors_of(outputs) -> np.ndarray:
    """A model output (an array, or a dict with a "descriptor" entry) as float32 `[B, D]`."""
    if isinstance(outputs, dict):
        if "descriptor" not in outputs:
            raise ValueError(
                f"The model returned a dict without a 'descriptor' entry. Received keys: "
                f"{sorted(outputs)}"
            )
        outputs = outputs["descriptor"]
    array = np.asarray(outputs, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"The model must return [B, D] descriptors. Received: shape={array.shape}")
    return array


def _raw_load(path):
    """`path -> (float32 [H, W, 3], ok)` at the file's own size; never raises (Pillow reader)."""

    def read(path_bytes):
        try:
            return read_rgb(path_bytes), np.bool_(True)
        except BadImageError:
            return np.zeros((1, 1, 3), np.uint8), np.bool_(False)

    pixels, ok = tf.numpy_function(read, [path], [tf.uint8, tf.bool], stateful=False)
    pixels.set_shape([None, None, 3])
    ok.set_shape([])
    return tf.cast(pixels, tf.float32), ok


def _make_dataset(paths, image_size, long_side, boxes, num_parallel_calls):
    """tf.data of `(index, image float32 [H, W, 3], ok)` in input order.

    Bad files never raise: `safe_load_image` (fixed size) or the Pillow reader `read_rgb`
    (any size, crops, long-side shrinking) flag them with ok=False.
    """

    needs_raw = boxes is not None or long_side is not None or image_size is None

    def decode(index, path, box):
        if not needs_raw:
            image, ok = safe_load_image(path, image_size)
        else:
            image, ok = _raw_load(path)
            if boxes is not None:
                image = _crop(image, box)
            if long_side is not None:
                image = _shrink_to_long_side(image, long_side)
            if image_size is not None:
                image = resize_image(image, image_size)
        image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, 3])
        return index, image, tf.cast(ok, tf.bool)

    box_array = boxes if boxes is not None else np.full((len(paths), 4), np.nan, np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(paths), dtype=np.int64), np.asarray(paths, dtype=object), box_array)
    )
    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    return without_autotuning(dataset)


def _crop(image, box):
    """Crops `[H, W, 3]` to `box = (x1, y1, x2, y2)` in pixels (NaN box: no crop)."""

    shape = tf.shape(image)
    height, width = shape[0], shape[1]

    def cropped():
        x1 = tf.clip_by_value(tf.cast(tf.floor(box[0]), tf.int32), 0, width - 1)
        y1 = tf.clip_by_value(tf.cast(tf.floor(box[1]), tf.int32), 0, height - 1)
        x2 = tf.clip_by_value(tf.cast(tf.math.ceil(box[2]), tf.int32), x1 + 1, width)
        y2 = tf.clip_by_value(tf.cast(tf.math.ceil(box[3]), tf.int32), y1 + 1, height)
        return image[y1:y2, x1:x2]

    return tf.cond(tf.reduce_any(tf.math.is_nan(box)), lambda: image, cropped)


def _shrink_to_long_side(image, long_side: int):
    """Resizes so the longer side is `long_side` when it is longer (aspect ratio kept)."""

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = float(long_side) / tf.reduce_max(shape)

    def shrunk():
        size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
        return resize_image(image, size)

    return tf.cond(scale < 1.0, shrunk, lambda: image)


def _stack(group: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    indices = np.array([element[0] for element in group], dtype=np.int64)
    images = np.stack([element[1] for element in group])
    ok = np.array([bool(element[2]) for element in group])
    return indices, images, ok


def same_size_batches(dataset, batch_size: int, max_pending: int):
    """Groups `(index, image, ok)` elements into `(indices, images, ok)` batches of one size.

    A batch is released when `batch_size` images of one size are pending, or, when more than
    `max_pending` images wait in total, the largest group is released early.
    """
    pending: dict[tuple, list] = {}
    total = 0
    for index, image, ok in dataset.as_numpy_iterator():
        if not ok:
            continue  # a placeholder: nothing to describe (its row stays zero)
        group = pending.setdefault(image.shape, [])
        group.append((index, image, ok))
        total += 1
        if len(group) >= batch_size:
            key = image.shape
        elif total > max_pending:
            key = max(pending, key=lambda shape: len(pending[shape]))
        else:
            continue
        released = pending.pop(key)
        total -= len(released)
        yield _stack(released)
    for group in pending.values():
        yield _stack(group)


def encode(
    model,
    image_paths,
    image_size=None,
    batch_size: int = 16,
    out_path: str | os.PathLike | None = None,
    long_side: int | None = None,
    boxes=None,
    num_parallel_calls: int | None = None,
    progress: bool = True,
    require_any: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Computes the descriptor of every image: `(descriptors [N, D] float32, valid [N] bool)`.

    Args:
        model: a `keras.Model` (image -> descriptor), a `sare_tf.artifacts.descriptor_model.DescriptorModel`
            (its image size is the default), or a callable mapping a float32 `[B, H, W, 3]` RGB
            0-255 batch to `[B, D]` (or to a dict with a "descriptor" entry, e.g. a SavedModel
            signature).
        image_paths: image files (absolute or relative to the working directory).
        image_size: `(height, width)` to resize every image to, or None to keep sizes (images of
            equal size are still batched together).
        batch_size: images per model call.
        out_path: write descriptors into this `.npy` file (memory-mapped) instead of memory.
        long_side: shrink images whose longer side exceeds this (the Tokyo 24/7 protocol shrinks
            queries to 640); applied before `image_size` when both are given.
        boxes: optional per-image `(x1, y1, x2, y2)` pixel crop (None entries: whole image),
            e.g. the Oxford / Paris query regions.
        num_parallel_calls: parallel decoders (default: one per usable core; no autotuning,
            see `sare_tf.data.parallelism`).
        progress: show a progress bar.
        require_any: raise when not one image could be read (a whole dataset of bad files is
            a mistake); False when the call is one part of a larger job (an index chunk), which
            then skips and counts them like any other bad image.

    Returns:
        `(descriptors, valid)`: descriptors (a `np.memmap` when `out_path` is given) with zero
        rows for unreadable images, and the mask of images that were read.

    Example:
        >>> descriptors, valid = encode(model, ["a.jpg", "b.jpg"], image_size=(480, 640))
        >>> descriptors.shape
        (2, 32768)
    """

    if isinstance(model, DescriptorModel):
        image_size = image_size if image_size is not None else model.image_size
        model = model.model
    paths = [os.fspath(path) for path in image_paths]
    image_size = check_image_size(image_size)
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    if long_side is not None and int(long_side) < 1:
        raise ValueError(f"`long_side` must be >= 1. Received: long_side={long_side}")
    box_array = _as_boxes(boxes, len(paths))
    predict = predict_fn(model)
    dataset = _make_dataset(
        paths,
        image_size,
        None if long_side is None else int(long_side),
        box_array,
        decoders(num_parallel_calls),
    )
    if image_size is not None:
        batches = dataset.batch(batch_size).prefetch(PREFETCH_BATCHES).as_numpy_iterator()
    else:
        batches = same_size_batches(dataset.prefetch(batch_size), batch_size, 4 * batch_size)

    valid = np.zeros(len(paths), dtype=bool)
    descriptors = None
    bar = ProgressBar(len(paths), "image", enabled=progress)
    done = 0
    for indices, images, ok in batches:
        output = descriptors_of(predict(tf.constant(images, dtype=tf.float32)))
        if len(output) != len(indices):
            raise ValueError(
                f"The model returned {len(output)} descriptors for {len(indices)} images."
            )
        if descriptors is None:
            descriptors = _allocate(len(paths), output.shape[1], out_path)
        descriptors[indices] = output
        valid[indices] = ok
        done += len(indices)
        bar.update(done)
    if require_any and paths and not valid.any():
        raise ValueError(f"None of the {len(paths)} images could be read (e.g. {paths[0]!r}).")
    if descriptors is None:
        descriptors = _allocate(0, 0, out_path)
    descriptors[~valid] = 0.0
    if isinstance(descriptors, np.memmap):
        descriptors.flush()
    bad = np.flatnonzero(~valid)
    if bad.size:
        examples = ", ".join(repr(paths[i]) for i in bad[:5])
        logger.warning(
            "%d of %d images could not be read and were skipped (zero descriptors): %s%s",
            bad.size,
            len(paths),
            examples,
            ", ..." if bad.size > 5 else "",
        )
    bar.update(len(paths))  # skipped images are done too
    return descriptors, valid


def extract_descriptors(model, image_paths, *args, return_valid: bool = False, **kwargs):
    """`encode`, returning only the descriptors unless `return_valid` (the round-1 name)."""
    descriptors, valid = encode(model, image_paths, *args, **kwargs)
    return (descriptors, valid) if return_valid else descriptors


def _allocate(count: int, dim: int, out_path):
    if out_path is None:
        return np.zeros((count, dim), dtype=np.float32)
    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    return np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(count, dim))
