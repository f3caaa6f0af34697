"""What exporting to another runtime or precision costs in retrieval: Recall@N and descriptor cosines.

`runtime_comparison(model_path, dataset, calibration, out)` exports one `.keras` model in each
`(format, quantize)` of `EXPORTS` (ONNX float and int8, LiteRT float, dynamic-range and int8),
encodes the dataset's database and queries with the Keras model (float32) and with every export,
and reports for each its Recall@N (the 25 m protocol) and change against the Keras model, and the
distribution of the cosine between its descriptor and the Keras one of the same image.
"""

from __future__ import annotations

import os

import numpy as np

EXPORTS = (("onnx", "none"), ("onnx", "int8"), ("litert", "none"), ("litert", "dynamic"),
           ("litert", "int8"))  # fmt: skip
QUANTILES = (0.0, 0.01, 0.05, 0.5)


def cosine_summary(reference, other) -> dict:
    """Per-row cosines of `other` to `reference` (`[N, D]` each): min, 1st / 5th percentile,
    median and mean."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    cosines = np.sum(reference * other, 1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    )
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
    from sare_tf.descriptor_model import load_descriptor_model
    from sare_tf.encoding import encode
    from sare_tf.evaluation.recall import recall_at_n
    from sare_tf.export.litert_export import export_litert
    from sare_tf.export.onnx_export import export_onnx

    writers = {"onnx": export_onnx, "litert": export_litert}
    keras_model = load_descriptor_model(model_path)
    paths = [*dataset.db_image_paths(), *dataset.query_image_paths()]

    def evaluate(loaded, label):
        print(f"encoding {len(paths)} images with {label}", flush=True)
        descriptors, valid = encode(loaded, paths, progress=False)
        if not valid.all():
            raise ValueError(f"{int((~valid).sum())} images could not be read; fix the dataset.")
        db, queries = descriptors[: dataset.num_db], descriptors[dataset.num_db :]
        recall = recall_at_n(queries, db, dataset.query_utm, dataset.db_utm, ns=ns)
        return descriptors, {int(n): float(r) for n, r in recall.items()}

    reference, reference_recall = evaluate(keras_model, "Keras float32")
    rows = [{"runtime": "tf", "quantize": "none", "recall": reference_recall}]
    for fmt, quantize in exports:
        info = writers[fmt](
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
