"""Model files: one owner per format, over one version-folder layout (`versions`) and one
atomic writer (`sare_tf.atomic`).

- `versions`: TF Serving's `<root>/<name>/<version>/` layout, shared by every export;
- `descriptor_model`: `DescriptorModel`, what a loaded model is to the encoder, and the
  image-size rule;
- `keras_format`, `saved_model_format` (+ `signatures`, the serving graph), `onnx_format`,
  `litert_format` (+ `runtime_export`, what those two share): each format detects, saves,
  loads, describes and fingerprints itself;
- `loading`: which format a path holds, `load_descriptor_model`, `model_fingerprint`.
"""

from sare_tf.artifacts.descriptor_model import (
    DescriptorModel,
    compute_precision,
    describe_model,
    resolve_image_size,
    set_inference_precision,
    store_image_size,
    stored_image_size,
)
from sare_tf.artifacts.keras_format import KerasFormat, read_keras_model, weights_fingerprint
from sare_tf.artifacts.loading import (
    FORMATS,
    check_runtime,
    describe_artifact,
    load_descriptor_model,
    locate_model,
    model_fingerprint,
)
from sare_tf.registry import RUNTIME_EXPORTS, RUNTIME_KINDS

__all__ = [
    "FORMATS",
    "RUNTIME_EXPORTS",
    "RUNTIME_KINDS",
    "DescriptorModel",
    "KerasFormat",
    "check_runtime",
    "compute_precision",
    "describe_artifact",
    "describe_model",
    "load_descriptor_model",
    "locate_model",
    "model_fingerprint",
    "read_keras_model",
    "resolve_image_size",
    "set_inference_precision",
    "store_image_size",
    "stored_image_size",
    "weights_fingerprint",
]
