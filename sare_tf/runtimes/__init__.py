"""Descriptor models run by other runtimes than TensorFlow, from `sare-tf export` artefacts.

One module per runtime (`onnx_runtime`: ONNX Runtime; `litert_runtime`: LiteRT, formerly
TensorFlow Lite), each a callable `images [B, H, W, 3] RGB 0-255 -> descriptors [B, D]` float32
that `encode`, `evaluate`, `index build` and `serve` use like a Keras model. This module owns what
they share: the version folder layout (one model file beside `export_info.json`) and the check
of an image batch before it reaches a runtime.
"""

from __future__ import annotations

import json
import os

import numpy as np

INFO_FILE = "export_info.json"


def locate_export(path, model_file: str) -> str | None:
    """The version folder holding `model_file` at `path` (that file, its folder, or a base folder
    of numbered versions: the highest), or None when `path` is not one."""
    path = os.fspath(path)
    extension = os.path.splitext(model_file)[1]
    if os.path.isfile(path) and path.endswith(extension):
        return os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, model_file)):
        return path
    versions = [
        e
        for e in os.listdir(path)
        if e.isdigit() and os.path.isfile(os.path.join(path, e, model_file))
    ]
    return os.path.join(path, max(versions, key=int)) if versions else None


def read_export_info(folder: str) -> dict:
    """A version folder's `export_info.json` (a clear error when it is missing or broken)."""
    info_path = os.path.join(folder, INFO_FILE)
    try:
        with open(info_path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(
            f"{folder} has no {INFO_FILE}; export it with sare-tf export --format ..."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{info_path} is not valid JSON ({error}).") from None


def check_image_batch(images, runtime: str, image_size=None) -> np.ndarray:
    """`images` as float32 `[B, H, W, 3]`, or a ValueError saying what is wrong with them.

    `image_size` (height, width), when given, is the only size the runtime's graph accepts.
    """
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"The {runtime} model takes images of shape [batch, height, width, 3] (RGB 0-255). "
            f"Received: shape={array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating) and array.dtype != np.uint8:
        raise ValueError(f"Images must be float or uint8 RGB 0-255. Received: dtype={array.dtype}")
    if image_size is not None and tuple(array.shape[1:3]) != tuple(image_size):
        raise ValueError(
            f"The {runtime} model was exported for {image_size[0]}x{image_size[1]} images. "
            f"Received: {array.shape[1]}x{array.shape[2]} (resize first; sare-tf does)."
        )
    return array.astype(np.float32, copy=False)
