"""Descriptors from a LiteRT export (`sare-tf export --format litert`), run by LiteRT's interpreter.

`LiteRTDescriptorModel(folder)` is a callable `images [B, H, W, 3] float32 RGB 0-255 -> [B, D]`
like `OnnxDescriptorModel`. A LiteRT graph has one image size, the one it was exported for (any
batch size); other sizes are refused with a clear error (sare-tf's encoder resizes to it). An
interpreter is not thread-safe, so calls are serialised by a lock (the server's batcher calls from
its own thread).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from sare_tf.runtimes import check_image_batch, locate_export, read_export_info

LITERT_FILE = "model.tflite"


def locate_litert(path) -> str | None:
    """The version folder of a LiteRT export at `path` (a `model.tflite`, its folder, or a base
    folder of numbered versions: the highest), or None when `path` is not one."""
    return locate_export(path, LITERT_FILE)


def interpreter_class():
    """LiteRT's `Interpreter` (the `ai-edge-litert` package: pip install -e ".[runtimes]")."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ValueError(
            f'LiteRT models need the ai-edge-litert package: pip install -e ".[runtimes]" ({error})'
        ) from None
    return Interpreter


class LiteRTInterpreter:
    """A LiteRT graph (a file or its bytes) as `images [B, H, W, 3] float32 -> output [B, ...]`:
    the input resized to each batch size, calls serialised by a lock."""

    def __init__(self, model_path=None, model_content=None, num_threads: int | None = None):
        self._interpreter = interpreter_class()(
            model_path=None if model_path is None else os.fspath(model_path),
            model_content=model_content,
            num_threads=int(num_threads) if num_threads else os.cpu_count(),
        )
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = None
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape[0] != self._batch:
                self._interpreter.resize_tensor_input(self._input, batch.shape, strict=True)
                self._interpreter.allocate_tensors()
                self._batch = batch.shape[0]
            self._interpreter.set_tensor(self._input, np.ascontiguousarray(batch))
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output))


class LiteRTDescriptorModel:
    """A LiteRT export on the CPU (XNNPACK kernels, float and int8).

    Attributes:
        folder: the version folder.
        info: its `export_info.json`.
        image_size: the `(height, width)` its graph takes.
    """

    runtime = "litert"

    def __init__(self, folder: str, num_threads: int | None = None):
        self.folder = os.fspath(folder)
        self.info = read_export_info(self.folder)
        self.image_size = tuple(self.info["image_size"])
        self._run = LiteRTInterpreter(os.path.join(self.folder, LITERT_FILE), None, num_threads)

    def __call__(self, images) -> np.ndarray:
        return self._run(check_image_batch(images, "LiteRT", self.image_size))
