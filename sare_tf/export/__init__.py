"""Exporting embedding models: the public entry points of the writers in `sare_tf.artifacts`.

- `export_saved_model` / `export_versioned`: the serving graph (`serving_default` on float
  images, `serve_jpeg` on encoded bytes) as a SavedModel, alone or as the next version of TF
  Serving's `root/<name>/<version>/` layout (`sare_tf.artifacts.saved_model_format`);
- `export_onnx`, `export_litert`: the same descriptor graph for ONNX Runtime and LiteRT, float
  or quantized; `exporter(fmt)` picks one;
- `pca`: fitting PCA whitening on database images before export (`add_pca_whitening`).

Names load on first use (`sare_tf.lazy_exports`).
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "sare_tf.artifacts.litert_format": ("export_litert",),
        "sare_tf.artifacts.onnx_format": ("export_onnx",),
        "sare_tf.artifacts.saved_model_format": ("ExportResult", "export_versioned"),
        "sare_tf.artifacts.signatures": (
            "BYTES_INPUT",
            "DESCRIPTOR_OUTPUT",
            "IMAGE_INPUT",
            "SERVE_JPEG",
            "SERVING_DEFAULT",
            "export_saved_model",
            "resolve_image_size",
            "serving_model",
        ),
        "sare_tf.artifacts.versions": ("list_versions", "next_version"),
        "runtimes": ("exporter",),
    },
)
