"""The runtime / quantization comparison: cosine summaries by hand, a tiny end-to-end report."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.evaluation.quantization import cosine_summary, markdown_table


def test_cosine_summary_by_hand():
    reference = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    other = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [1.0, -1.0]])  # cosines 1, 1, 0.6, 0
    summary = cosine_summary(reference, other)
    assert summary["min"] == pytest.approx(0.0)
    assert summary["q50"] == pytest.approx(0.8)  # the middle of 0.6 and 1
    assert summary["mean"] == pytest.approx(0.65)
    assert summary["q01"] == pytest.approx(np.quantile([0.0, 0.6, 1.0, 1.0], 0.01))


@pytest.mark.slow
def test_a_tiny_report_puts_float_exports_at_zero_change(tiny_model, tiny_city, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    from sare_tf.artifacts import load_descriptor_model, store_image_size
    from sare_tf.data import GeoDataset
    from sare_tf.evaluation import run_dataset_evaluation
    from sare_tf.evaluation.quantization import runtime_comparison

    store_image_size(tiny_model, (48, 64))
    tiny_model.save(tmp_path / "tiny.keras")
    test = GeoDataset.load(tiny_city["test"])
    calibration = GeoDataset.load(tiny_city["train"]).db_image_paths()
    report = runtime_comparison(
        tmp_path / "tiny.keras", test, calibration, tmp_path / "out",
        exports=(("onnx", "none"), ("litert", "int8")), calibration_count=8,
    )  # fmt: skip
    keras_row, onnx_row, litert_row = report["rows"]
    expected = run_dataset_evaluation(
        load_descriptor_model(tmp_path / "tiny.keras"), test, (48, 64), progress=False
    )
    for n in (1, 5, 10):
        assert keras_row["recall"][n] == pytest.approx(expected.metrics[f"recall@{n}"])
    assert onnx_row["recall"] == keras_row["recall"]
    assert set(onnx_row["recall_change_points"].values()) == {0.0}
    assert onnx_row["cosine_to_keras"]["min"] >= 0.99999
    assert litert_row["cosine_to_keras"]["min"] >= 0.98
    assert report["images"] == test.num_db + test.num_queries
    table = markdown_table(report)
    assert table.count("\n") == 2 + 3 and "| litert | int8 |" in table
