"""`ExportSettings`: what `sare-tf export` writes, one field per flag of the command.

Pure Python, so that the command builds its flags from it at start-up (`sare_tf.config_options`).
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import (
    batch_size_option,
    dataset_option,
    image_root_option,
    image_size_option,
    model_option,
    option,
)
from sare_tf.registry import RUNTIME_EXPORTS

FORMATS = ("saved_model", *RUNTIME_EXPORTS)
QUANTIZATIONS = ("none", "dynamic", "int8")
DEFAULT_ROOTS = {"saved_model": "saved_models", "onnx": "onnx_models", "litert": "litert_models"}


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How a trained model is exported (each field is a flag of `sare-tf export`).

    Attributes:
        model: the trained model (.keras file).
        name, version, root: the export lands in `root/name/version/` (TF Serving's layout;
            version None: the next free one; root None: the format's default root).
        format: "saved_model" (TF Serving), "onnx" or "litert".
        quantize, calibration, calibration_count: int8 / dynamic quantization for ONNX and
            LiteRT, calibrated on a dataset's database images.
        image_size: the size serve_jpeg resizes to (None: the size the model records).
        pca_dim, pca_from, pca_max_images: PCA whitening fitted on a dataset before export.
        image_root: the folder the datasets' image paths are relative to.
        batch_size: images per forward pass of the PCA fit.
        keras_copy: write `root/name/version.keras` beside a SavedModel.
    """

    model: str | None = model_option("the model to export (.keras file)")
    image_size: tuple[int, int] | None = image_size_option(
        "size serve_jpeg resizes images to (default: the size the model records, as models "
        "trained by sare-tf train do, or its fixed input size)"
    )
    batch_size: int = batch_size_option(16, "images per forward pass for the PCA fit")
    name: str | None = option(
        None, "model name (folder and TF Serving MODEL_NAME)", group="output", required=True
    )
    version: int | None = option(
        None, "version number (default: the next free one)", group="output"
    )
    root: str | None = option(
        None, "export root (default: saved_models for SavedModels, onnx_models for ONNX, "
        "litert_models for LiteRT)", group="output", metavar="DIR",
    )  # fmt: skip
    format: str = option(
        "saved_model", "saved_model (TF Serving), onnx (ONNX Runtime) or litert (LiteRT, the "
        "former TensorFlow Lite): image -> descriptor in one graph", group="output",
        choices=FORMATS,
    )  # fmt: skip
    keras_copy: bool = option(
        True, "do not write the NAME/VERSION.keras copy beside the SavedModel",
        group="output", flag="--no-keras-copy", switch="off",
    )  # fmt: skip
    quantize: str = option(
        "none", "onnx / litert: int8 = the backbone in int8, calibrated (needs --calibration; "
        "preprocessing, NetVLAD, PCA and L2 stay float32); dynamic (litert) = int8 weights, "
        "float activations", group="quantization", choices=QUANTIZATIONS,
    )  # fmt: skip
    calibration: str | None = dataset_option(
        "dataset whose database images calibrate the int8 quantization", flag="--calibration",
        required=False,
    )  # fmt: skip
    calibration_count: int = option(
        200, "calibration images (a seeded subset)", group="quantization"
    )
    pca_dim: int | None = option(
        None, "add PCA whitening to D dims (needs --pca-from)", group="PCA whitening",
        metavar="D",
    )  # fmt: skip
    pca_from: str | None = dataset_option(
        "dataset (.mat dbStruct, .csv or folder) whose database images PCA is fitted on",
        flag="--pca-from", required=False,
    )  # fmt: skip
    pca_max_images: int = option(
        10_000, "database images used at most for the PCA fit (seeded subset)",
        group="PCA whitening",
    )  # fmt: skip
    image_root: str | None = image_root_option()

    def __post_init__(self):
        if (self.pca_dim is None) != (self.pca_from is None):
            raise ValueError(
                "--pca-dim and --pca-from go together. "
                f"Received: --pca-dim={self.pca_dim}, --pca-from={self.pca_from}"
            )
        if self.format == "saved_model" and (self.quantize != "none" or self.calibration):
            raise ValueError("--quantize and --calibration apply to --format onnx and litert.")

    @property
    def export_root(self) -> str:
        """`root`, or the format's default root."""
        return self.root or DEFAULT_ROOTS[self.format]
