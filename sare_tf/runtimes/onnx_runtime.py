"""Descriptors from an ONNX export with ONNX Runtime (`sare-tf export --format onnx`).

`OnnxDescriptorModel(folder)` is a callable `images [B, H, W, 3] float32 RGB 0-255 -> [B, D]`,
usable wherever sare_tf encodes images (`encode`, `evaluate`, `index build`, `serve`); inputs are
checked (rank, channels, dtype) before they reach the session, with a clear error. ONNX Runtime's
sessions may be called from several threads at once.
"""

from __future__ import annotations

import os

import numpy as np

from sare_tf.runtimes import check_image_batch, locate_export, read_export_info

ONNX_FILE = "model.onnx"


def locate_onnx(path) -> str | None:
    """The version folder of an ONNX export at `path` (a `model.onnx`, its folder, or a base
    folder of numbered versions: the highest), or None when `path` is not one."""
    return locate_export(path, ONNX_FILE)


class OnnxDescriptorModel:
    """An ONNX export, run by ONNX Runtime on the CPU.

    Attributes:
        folder: the version folder.
        info: its `export_info.json`.
        image_size: the `(height, width)` it was exported for.
    """

    runtime = "onnx"

    def __init__(self, folder: str, num_threads: int | None = None):
        import onnxruntime as ort

        self.folder = os.fspath(folder)
        self.info = read_export_info(self.folder)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(
            os.path.join(self.folder, ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.image_size = tuple(self.info["image_size"]) if self.info.get("image_size") else None

    def __call__(self, images) -> np.ndarray:
        batch = check_image_batch(images, "ONNX")
        (descriptor,) = self.session.run(None, {"image": batch})
        return descriptor
