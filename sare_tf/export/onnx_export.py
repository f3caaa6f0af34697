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

Exports are versioned and atomic (`sare_tf.export.runtime_export`):
`<root>/<name>/<version>/model.onnx` with `export_info.json`, default root `onnx_models/`.
"""

from __future__ import annotations

import os

from sare_tf.export.runtime_export import calibration_images, in_float_scope, write_runtime_export
from sare_tf.runtimes.onnx_runtime import ONNX_FILE

QUANTIZATIONS = ("none", "int8")
OPSET = 17


def onnx_bytes(model, opset: int = OPSET) -> bytes:
    """The serialised ONNX graph of `image -> descriptor` for a Keras embedding model."""
    import tensorflow as tf
    import tf2onnx

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
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(float_path).graph
    kept_float = [n.name for n in graph.node if in_float_scope(n.name)]
    convolutions = [n.name for n in graph.node if n.op_type == "Conv" and n.name not in kept_float]
    quantize_static(
        float_path,
        out_path,
        _CalibrationImages(list(calibration_paths), image_size),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=kept_float,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {"quantized_convolutions": len(convolutions), "float_nodes": len(kept_float)}


def export_onnx(model, root="onnx_models", name: str = "sare", quantize: str = "none", **options):
    """Writes a version of `<root>/<name>/` as ONNX (module docstring).

    `options`: `version` (default the next), `image_size`, `calibration_paths`,
    `calibration_count` (200), `seed` (0), `source_model`, as `write_runtime_export` takes them.

    Returns:
        The `export_info.json` contents, with `path` (the version folder).

    Raises:
        ValueError: an unknown quantization, int8 without calibration images, a bad name.
        FileExistsError: `version` exists (versions are never overwritten).
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
