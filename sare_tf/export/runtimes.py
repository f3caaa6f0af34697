"""Which writer exports a model for a runtime other than TensorFlow."""

from __future__ import annotations

from sare_tf.artifacts.litert_format import export_litert
from sare_tf.artifacts.onnx_format import export_onnx

RUNTIME_EXPORTERS = {"onnx": export_onnx, "litert": export_litert}


def exporter(fmt: str):
    """The export function of a runtime format: `export_onnx` or `export_litert`."""
    if fmt not in RUNTIME_EXPORTERS:
        raise ValueError(
            f"Unknown runtime export format. Expected one of {sorted(RUNTIME_EXPORTERS)}. "
            f"Received: {fmt!r}"
        )
    return RUNTIME_EXPORTERS[fmt]
