"""Exporting embedding models: the public entry points of the writers in `sare_tf.artifacts`.

- `export_saved_model` / `export_versioned`: the serving graph (`serving_default` on float
  images, `serve_jpeg` on encoded bytes) as a SavedModel, alone or as the next version of TF
  Serving's `root/<name>/<version>/` layout (`sare_tf.artifacts.saved_model_format`);
- `export_onnx`, `export_litert`: the same descriptor graph for ONNX Runtime and LiteRT, float
  or quantized; `exporter(fmt)` picks one;
- `pca`: fitting PCA whitening on database images before export (`add_pca_whitening`).
"""

from __future__ import annotations

from sare_tf.artifacts.litert_format import export_litert
from sare_tf.artifacts.onnx_format import export_onnx
from sare_tf.artifacts.saved_model_format import ExportResult, export_versioned
from sare_tf.artifacts.signatures import (
    BYTES_INPUT,
    DESCRIPTOR_OUTPUT,
    IMAGE_INPUT,
    SERVE_JPEG,
    SERVING_DEFAULT,
    export_saved_model,
    resolve_image_size,
    serving_model,
)
from sare_tf.artifacts.versions import list_versions, next_version


def exporter(fmt: str):
    """The export function of a runtime format: `export_onnx` or `export_litert`."""
    if fmt == "onnx":
        return export_onnx
    if fmt == "litert":
        return export_litert
    raise ValueError(f"Unknown runtime export format. Received: {fmt!r}")


__all__ = [
    "BYTES_INPUT",
    "DESCRIPTOR_OUTPUT",
    "IMAGE_INPUT",
    "SERVE_JPEG",
    "SERVING_DEFAULT",
    "ExportResult",
    "export_saved_model",
    "export_versioned",
    "export_litert",
    "export_onnx",
    "exporter",
    "list_versions",
    "next_version",
    "resolve_image_size",
    "serving_model",
]
