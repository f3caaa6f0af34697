"""Exporting embedding models as SavedModels for TF Serving.

One job per module:

- `signatures`: the serving graph (`serving_default` on float images, `serve_jpeg` on
  encoded bytes) written as a self-contained SavedModel by `export_saved_model`.
- `versioned`: the TF Serving folder layout `root/<name>/<version>/` with a `.keras` copy
  beside each version, written atomically by `export_versioned`.
- `pca`: fitting PCA whitening on database images before export (`add_pca_whitening`).
- `onnx_export`, `litert_export`: the same descriptor graph for ONNX Runtime and LiteRT (float or
  quantized), over `runtime_export` (their versioned folders and calibration); `exporter(fmt)`
  picks one.
"""

from __future__ import annotations

from sare_tf.export.signatures import (
    BYTES_INPUT,
    DESCRIPTOR_OUTPUT,
    IMAGE_INPUT,
    SERVE_JPEG,
    SERVING_DEFAULT,
    export_saved_model,
    resolve_image_size,
    serving_model,
)
from sare_tf.export.versioned import (
    ExportResult,
    export_versioned,
    list_versions,
    next_version,
)


def exporter(fmt: str):
    """The export function of a runtime format: `export_onnx` or `export_litert`."""
    if fmt == "onnx":
        from sare_tf.export.onnx_export import export_onnx

        return export_onnx
    if fmt == "litert":
        from sare_tf.export.litert_export import export_litert

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
    "exporter",
    "list_versions",
    "next_version",
    "resolve_image_size",
    "serving_model",
]
