"""What exporting to another runtime or precision costs in retrieval: Recall@N and descriptor cosines.

`runtime_comparison(model_path, dataset, calibration, out)` exports one `.keras` model in each
`(format, quantize)` of `EXPORTS` (ONNX float and int8, LiteRT float, dynamic-range and int8),
encodes the dataset's database and queries with the Keras model (float32) and with every export,
and reports for each its Recall@N (the 25 m protocol) and change against the Keras model, and the
distribution of the cosine between its descriptor and the Keras one of the same image.

`int8_layer_report` shows, layer by layer, why LiteRT's *full* int8 is not offered (see
`sare_tf.artifacts.litert_format`).
"""

from __future__ import annotations

import csv
import io
import logging
import os

import numpy as np
import tensorflow as tf

from sare_tf.artifacts import load_descriptor_model
from sare_tf.artifacts.litert_format import LiteRTInterpreter, backbone_only_int8, tflite_converter
from sare_tf.encoding import encode
from sare_tf.evaluation.recall import recall_at_n
from sare_tf.export import exporter

logger = logging.getLogger(__name__)

EXPORTS = (("onnx", "none"), ("onnx", "int8"), ("litert", "none"), ("litert", "dynamic"),
           ("litert", "int8"))  # fmt: skip
QUANTILES = (0.0, 0.01, 0.05, 0.5)


def row_cosines(reference, other) -> np.ndarray:
    """`[N]` float64 cosines between the rows of `reference` and `other` (`[N, D]` each)."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    return np.sum(reference * other, 1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    )


def cosine_summary(reference, other) -> dict:
    """Per-row cosines of `other` to `reference` (`[N, D]` each): min, 1st / 5th percentile,
    median and mean."""
    cosines = row_cosines(reference, other)
    summary = {f"q{round(100 * q):02d}": float(np.quantile(cosines, q)) for q in QUANTILES}
    return {"min": summary.pop("q00"), **summary, "mean": float(cosines.mean())}


def runtime_comparison(
    model_path, dataset, calibration, out, exports=EXPORTS, calibration_count=200, ns=(1, 5, 10)
) -> dict:
    """Exports, encodes and compares (module docstring); returns the report's rows.

    Args:
        model_path: the `.keras` model (its recorded image size is used throughout).
        dataset: a loaded `GeoDataset` (database and queries are encoded).
        calibration: image paths that calibrate the int8 exports.
        out: where the exports are written (`<out>/<format>_models/compared/<version>/`).
        exports: `(format, quantize)` pairs.
    """

    keras_model = load_descriptor_model(model_path)
    paths = [*dataset.db_image_paths(), *dataset.query_image_paths()]

    def evaluate(loaded, label):
        logger.info(f"encoding {len(paths)} images with {label}")
        descriptors, valid = encode(loaded, paths, progress=False)
        if not valid.all():
            raise ValueError(f"{int((~valid).sum())} images could not be read; fix the dataset.")
        db, queries = descriptors[: dataset.num_db], descriptors[dataset.num_db :]
        recall = recall_at_n(queries, db, dataset.query_utm, dataset.db_utm, ns=ns)
        return descriptors, {int(n): float(r) for n, r in recall.items()}

    reference, reference_recall = evaluate(keras_model, "Keras float32")
    rows = [{"runtime": "tf", "quantize": "none", "recall": reference_recall}]
    for fmt, quantize in exports:
        info = exporter(fmt)(
            keras_model.model, root=os.path.join(out, f"{fmt}_models"), name="compared",
            quantize=quantize, calibration_paths=calibration if quantize == "int8" else None,
            calibration_count=calibration_count, source_model=os.path.abspath(model_path),
        )  # fmt: skip
        descriptors, recall = evaluate(load_descriptor_model(info["path"]), f"{fmt} {quantize}")
        rows.append({
            "runtime": fmt,
            "quantize": quantize,
            "path": info["path"],
            "recall": recall,
            "recall_change_points": {
                n: round(100 * (recall[n] - reference_recall[n]), 2) for n in recall
            },
            "cosine_to_keras": cosine_summary(reference, descriptors),
        })  # fmt: skip
    return {"model": str(model_path), "dataset": dataset.name, "images": len(paths), "rows": rows}


def markdown_table(report: dict) -> str:
    """The report as a Markdown table: Recall@N, its change, and the cosine distribution."""
    ns = list(report["rows"][0]["recall"])
    header = ["runtime", "quantize", *[f"R@{n}" for n in ns], *[f"ΔR@{n} (pts)" for n in ns],
              "cosine min", "p1", "p5", "median"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in report["rows"]:
        recall = [f"{100 * row['recall'][n]:.1f}" for n in ns]
        change = [f"{row['recall_change_points'][n]:+.1f}" if "cosine_to_keras" in row else "-"
                  for n in ns]  # fmt: skip
        cosine = row.get("cosine_to_keras")
        cosines = (
            [f"{cosine[k]:.5f}" for k in ("min", "q01", "q05", "q50")] if cosine else ["-"] * 4
        )
        lines.append("| " + " | ".join([row["runtime"], row["quantize"], *recall, *change,
                                        *cosines]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def int8_layer_report(model, image_size, calibration, debug_images: int = 4) -> dict:
    """Why LiteRT full int8 fails: TFLite's quantization debugger on the fully quantized model.

    Each quantized layer's output is compared with the float computation of the same op on the
    same int8 inputs (the debugger's NumericVerify), on the first `debug_images` calibration
    images. Returns `{"layers": [...], "cosine": {...}}`: the layers sorted by their root mean
    square error in units of their own quantization step (`error_in_steps`; a correctly
    quantized op is near 0.29, the rounding error of a uniform step), and the descriptor cosine
    to the float model of the fully quantized graph (`full_int8`) and of the int8 mode sare_tf
    exports (`backbone_int8`), on the same images.
    """

    images = np.concatenate(list(calibration())[:debug_images])
    converter = tflite_converter(model, image_size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in calibration())
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image[None]] for image in images)
    )
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    layers = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"])
        rmse = float(row["mean_squared_error"]) ** 0.5
        layers.append({
            "op": row["op_name"],
            "tensor_name": row["tensor_name"],
            "scale": scale,
            "error_in_steps": round(rmse / scale, 3) if scale else None,
            "max_abs_error": float(row["max_abs_error"]),
        })  # fmt: skip
    layers.sort(key=lambda layer: -(layer["error_in_steps"] or 0.0))
    reference = np.asarray(model(images, training=False))
    full = debugger.get_nondebug_quantized_model()
    selective, _ = backbone_only_int8(debugger, model)
    return {
        "layers": layers,
        "cosine": {
            "full_int8": float(
                row_cosines(LiteRTInterpreter(model_content=full)(images), reference).min()
            ),
            "backbone_int8": float(
                row_cosines(LiteRTInterpreter(model_content=selective)(images), reference).min()
            ),
        },
    }
