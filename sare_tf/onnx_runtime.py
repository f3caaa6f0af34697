"""Descriptors from an ONNX export with ONNX Runtime (`sare-tf export --format onnx`).

`OnnxDescriptorModel(path)` is a callable `images [B, H, W, 3] float32 RGB 0-255 -> [B, D]`,
usable wherever sare_tf encodes images (`encode`, `evaluate`, `index build`); inputs are checked
(rank, channels, dtype) before they reach the session, with a clear error.
"""

from __future__ import annotations

import json
import os

import numpy as np

# The files of an ONNX export's version folder (written by `sare_tf.export.onnx_export`).
ONNX_FILE = "model.onnx"
INFO_FILE = "export_info.json"


def locate_onnx(path) -> str | None:
    """The version folder of an ONNX export at `path` (a `model.onnx`, its folder, or a base
    folder of numbered versions: the highest), or None when `path` is not one."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".onnx"):
        return os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, ONNX_FILE)):
        return path
    versions = [
        e
        for e in os.listdir(path)
        if e.isdigit() and os.path.isfile(os.path.join(path, e, ONNX_FILE))
    ]
    return os.path.join(path, max(versions, key=int)) if versions else None


class OnnxDescriptorModel:
    """An ONNX export, run by ONNX Runtime on the CPU.

    Attributes:
        folder: the version folder.
        info: its `export_info.json`.
        image_size: the `(height, width)` it was exported for.
    """

    def __init__(self, folder: str, num_threads: int | None = None):
        import onnxruntime as ort

        self.folder = os.fspath(folder)
        with open(os.path.join(self.folder, INFO_FILE), encoding="utf-8") as handle:
            self.info = json.load(handle)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(
            os.path.join(self.folder, ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.image_size = tuple(self.info["image_size"]) if self.info.get("image_size") else None

    def __call__(self, images) -> np.ndarray:
        array = np.asarray(images)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(
                "The ONNX model takes images of shape [batch, height, width, 3] (RGB 0-255). "
                f"Received: shape={array.shape}"
            )
        if not np.issubdtype(array.dtype, np.floating) and array.dtype != np.uint8:
            raise ValueError(
                f"Images must be float or uint8 RGB 0-255. Received: dtype={array.dtype}"
            )
        (descriptor,) = self.session.run(None, {"image": array.astype(np.float32, copy=False)})
        return descriptor
