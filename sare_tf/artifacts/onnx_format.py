"""ONNX export, float or int8, for ONNX Runtime: the same descriptor contract as the SavedModel.

One ONNX graph maps `image` (float32 `[N, H, W, 3]`, RGB 0-255, any size) to `descriptor`
(float32 `[N, D]`), pixel preprocessing, backbone, NetVLAD, PCA whitening and L2 included
(converted from the Keras model's traced function with tf2onnx). `quantize="int8"` applies ONNX
Runtime's static QDQ quantization, per channel, to the backbone's convolutions only: the layers of
`FLOAT_SCOPES` (NetVLAD, the PCA whitening, the normalisations, the preprocessing) stay float32,
calibrated (min-max) on `calibration_count` images of a dataset's database (a seeded subset, at
the model's image size).

ONNX Runtime's *dynamic* quantization is not offered: it quantizes MatMul-heavy models
(transformers, RNNs); its convolutions (ConvInteger) run slower than float on CPUs.

Exports are versioned and atomic (`sare_tf.artifacts.runtime_export`):
`<root>/<name>/<version>/model.onnx` with `export_info.json`, default root `onnx_models/`.

Loading: Descriptors from an ONNX export with ONNX Runtime (`sare-tf export --format onnx`).

`OnnxDescriptorModel(folder)` is a callable `images [B, H, W, 3] float32 RGB 0-255 -> [B, D]`,
usable wherever sare_tf encodes images (`encode`, `evaluate`, `index build`, `serve`); inputs are
checked (rank, channels, dtype) before they reach the session, with a clear error. ONNX Runtime's
sessions may be called from several threads at once.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from sare_tf.artifacts.runtime_export import (
    RuntimeExportFormat,
    calibration_images,
    check_image_batch,
    in_float_scope,
    read_export_info,
    write_runtime_export,
)
from sare_tf.extras import require

QUANTIZATIONS = ("none", "int8")
OPSET = 17
ONNX_FILE = "model.onnx"


def onnx_bytes(model, opset: int = OPSET) -> bytes:
    """The serialised ONNX graph of `image -> descriptor` for a Keras embedding model."""
    tf2onnx = require("tf2onnx", "runtimes", "ONNX exports")
    spec = (tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),)

    @tf.function(input_signature=spec, autograph=False)
    def describe(image):
        return {"descriptor": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(describe, input_signature=spec, opset=opset)
    return proto.SerializeToString()


class _CalibrationImages:
    """ONNX Runtime's CalibrationDataReader over image files (one image per call)."""

    def __init__(self, paths, image_size):
        self._images = calibration_images(paths, image_size)

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else {"image": image}


def quantize_int8(float_path: str, out_path: str, calibration_paths, image_size) -> dict:
    """Static QDQ int8 of the backbone convolutions; returns what was quantized."""
    onnx = require("onnx", "runtimes", "int8 ONNX exports")
    quantization = require("onnxruntime.quantization", "runtimes", "int8 ONNX exports")
    QuantType = quantization.QuantType
    graph = onnx.load(float_path).graph
    kept_float = [n.name for n in graph.node if in_float_scope(n.name)]
    convolutions = [n.name for n in graph.node if n.op_type == "Conv" and n.name not in kept_float]
    quantization.quantize_static(
        float_path,
        out_path,
        _CalibrationImages(list(calibration_paths), image_size),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=kept_float,
        calibrate_method=quantization.CalibrationMethod.MinMax,
    )
    return {"quantized_convolutions": len(convolutions), "float_nodes": len(kept_float)}


def export_onnx(model, root="onnx_models", name: str = "sare", quantize: str = "none", **options):
    """Writes a version of `<root>/<name>/` as ONNX (module docstring).

    `options` (version, image size, calibration images, seed, source model), what it returns
    (the `export_info.json` contents with `path`) and what it raises: `write_runtime_export`.
    """
    if quantize == "dynamic":
        raise ValueError(
            "--format onnx has no dynamic quantization: ONNX Runtime's dynamic mode targets "
            "MatMul-heavy models and runs convolutions slower than float. Use --quantize int8 "
            "(static, calibrated) or --format litert --quantize dynamic."
        )

    def write_model(staging, model, image_size, calibration):
        float_path = os.path.join(staging, "float.onnx" if calibration else ONNX_FILE)
        with open(float_path, "wb") as handle:
            handle.write(onnx_bytes(model))
        extra = {"opset": OPSET}
        if calibration:
            out_path = os.path.join(staging, ONNX_FILE)
            extra.update(quantize_int8(float_path, out_path, calibration, image_size))
            os.remove(float_path)
        return extra

    return write_runtime_export(
        model, "onnx", QUANTIZATIONS, write_model, root, name, quantize=quantize, **options
    )


class OnnxDescriptorModel:
    """An ONNX export, run by ONNX Runtime on the CPU.

    Attributes:
        folder: the version folder.
        info: its `export_info.json`.
        image_size: the `(height, width)` it was exported for.
    """

    runtime = "onnx"

    def __init__(self, folder: str, num_threads: int | None = None):
        ort = require("onnxruntime", "runtimes", "ONNX models")
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


class OnnxFormat(RuntimeExportFormat):
    """`onnx` exports: a version folder holding `model.onnx` and `export_info.json`."""

    name = "onnx"
    model_file = ONNX_FILE
    runtime = OnnxDescriptorModel
    save = staticmethod(export_onnx)
