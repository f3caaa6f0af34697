"""LiteRT (TensorFlow Lite) export, float, dynamic-range or int8: the SavedModel's descriptor contract.

One `.tflite` graph maps `image` (float32 `[N, H, W, 3]`, RGB 0-255, at the exported image size,
any batch) to `descriptor` (float32 `[N, D]`), preprocessing, backbone, NetVLAD, PCA whitening and
L2 included, converted from the Keras model's traced function with its variables frozen.

- `none`: float32.
- `dynamic`: dynamic-range quantization (weights of every convolution and dense layer stored as
  int8, activations float; no calibration).
- `int8`: the backbone's convolutions and poolings in int8 (weights per channel, activations
  calibrated on a seeded subset of a dataset's database), the layers of `FLOAT_SCOPES` (the pixel
  preprocessing, NetVLAD, PCA whitening, the final L2) kept in float32.

Why not *all* in int8 (TFLite's "full integer" mode): it gives wrong descriptors (cosine 0.94 to
float on a random VGG16 + NetVLAD(64), lower on trained ones). Per-layer, with TFLite's
quantization debugger (`sare_tf.evaluation.quantization.int8_layer_report`,
`scripts/litert_int8_debug.py`), the error is in NetVLAD's normalisations,
not the backbone: one int8 scale per tensor cannot hold the per-cluster sums of squares (they span
orders of magnitude between clusters with many and few assigned features, so small clusters round
to zero and `rsqrt` of the clamp blows them up), and the final L2 normalisation's int8 output has a
fixed step of 1/128 while the elements of a 32768-d unit vector are about 1/181. A second, smaller
cause is TFLite's int8 `REVERSE_V2` (VGG16's RGB -> BGR flip), which returns wrong values: the
pixel preprocessing stays float32 too. Keeping the head
in float32 (as ONNX Runtime's int8 export does) removes that error at no measurable speed cost (the
head is under 1 % of the FLOPs). The selection uses the debugger's denylist of nodes.

Exports are versioned and atomic (`sare_tf.artifacts.runtime_export`):
`<root>/<name>/<version>/model.tflite` with `export_info.json`, default root `litert_models/`.

Loading: Descriptors from a LiteRT export (`sare-tf export --format litert`), run by LiteRT's interpreter.

`LiteRTDescriptorModel(folder)` is a callable `images [B, H, W, 3] float32 RGB 0-255 -> [B, D]`
like `OnnxDescriptorModel`. A LiteRT graph has one image size, the one it was exported for (any
batch size); other sizes are refused with a clear error (sare-tf's encoder resizes to it). An
interpreter is not thread-safe, so calls are serialised by a lock (the server's batcher calls from
its own thread).
"""

from __future__ import annotations

import os
import re
import threading

import keras
import numpy as np
import tensorflow as tf

# The one private import (tests/test_architecture.py says why).
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from sare_tf.artifacts.runtime_export import (
    FLOAT_SCOPES,
    RuntimeExportFormat,
    calibration_images,
    check_image_batch,
    in_float_scope,
    read_export_info,
    write_runtime_export,
)
from sare_tf.extras import require

QUANTIZATIONS = ("none", "dynamic", "int8")
LITERT_FILE = "model.tflite"


def tflite_converter(model, image_size):
    """A TFLite converter of the frozen `image [None, H, W, 3] -> descriptor` function."""
    spec = tf.TensorSpec([None, *image_size, 3], tf.float32, name="image")

    @tf.function(input_signature=[spec], autograph=False)
    def describe(image):
        return {"descriptor": model(image, training=False)}

    frozen = convert_variables_to_constants_v2(describe.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def backbone_layer_names(model) -> list[str]:
    """The layers quantized by `int8`: every layer with weights or pooling outside FLOAT_SCOPES.

    Normalisations that compute statistics at inference (group and layer normalisation) stay
    float32 like the head: a mean of squares spans orders of magnitude that one int8 scale
    does not hold (batch normalisation at inference is an affine map and quantizes well).
    """
    statistics = (keras.layers.GroupNormalization, keras.layers.LayerNormalization)
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, (keras.layers.InputLayer, *statistics))
        and not in_float_scope(layer.name)
    ]


def float_node_names(tensor_names, backbone_layers) -> list[str]:
    """The converted nodes to keep in float32: those of no backbone layer, or of a float scope.

    A node's name is its output tensor's: scopes joined by '/', fused nodes' names by ';', a
    layer's scope `<layer>` or `<layer>_<call>`.
    """
    pattern = re.compile(
        r"(?:^|[/;])(?:" + "|".join(re.escape(n) for n in backbone_layers) + r")(?:_\d+)?(?:/|;|$)"
    )
    return [t for t in tensor_names if in_float_scope(t) or not pattern.search(t)]


def _int8_backbone(converter, model, calibration) -> tuple[bytes, dict]:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in calibration())
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: iter(())
    )  # calibrates once; `backbone_only_int8` re-quantizes the calibrated model
    return backbone_only_int8(debugger, model)


def backbone_only_int8(debugger, model) -> tuple[bytes, dict]:
    """The debugger's calibrated model quantized with every node outside the backbone denylisted."""
    calibrated = interpreter_class()(model_content=debugger.calibrated_model)
    names = [tensor["name"] for tensor in calibrated.get_tensor_details()]
    kept_float = float_node_names(names, backbone_layer_names(model))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=kept_float)
    return debugger.get_nondebug_quantized_model(), {
        "float_nodes": len(kept_float),
        "quantized_nodes": len(names) - len(kept_float),
        "float_scopes": list(FLOAT_SCOPES),
    }


def litert_bytes(model, image_size, quantize: str = "none", calibration=None) -> tuple[bytes, dict]:
    """The `.tflite` flatbuffer of `model` at `image_size`, and what was quantized.

    `calibration()` yields float32 `[1, H, W, 3]` images (int8 only).
    """
    converter = tflite_converter(model, image_size)
    if quantize == "int8":
        return _int8_backbone(converter, model, calibration)
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert(), {}


def export_litert(
    model, root="litert_models", name: str = "sare", quantize: str = "none", **options
):
    """Writes a version of `<root>/<name>/` as LiteRT (module docstring).

    `options` (version, image size, calibration images, seed, source model), what it returns
    (the `export_info.json` contents with `path`) and what it raises: `write_runtime_export`.
    """

    def write_model(staging, model, image_size, calibration):
        images = (
            None if calibration is None else (lambda: calibration_images(calibration, image_size))
        )
        flatbuffer, details = litert_bytes(model, image_size, quantize, images)
        with open(os.path.join(staging, LITERT_FILE), "wb") as handle:
            handle.write(flatbuffer)
        return details

    return write_runtime_export(
        model, "litert", QUANTIZATIONS, write_model, root, name, quantize=quantize, **options
    )


def interpreter_class():
    """LiteRT's `Interpreter` (the `ai-edge-litert` package: pip install -e ".[runtimes]")."""
    return require("ai_edge_litert.interpreter", "runtimes", "LiteRT models").Interpreter


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


class LiteRTFormat(RuntimeExportFormat):
    """`litert` exports: a version folder holding `model.tflite` and `export_info.json`."""

    name = "litert"
    model_file = LITERT_FILE
    runtime = LiteRTDescriptorModel
    save = staticmethod(export_litert)
