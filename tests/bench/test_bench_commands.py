"""`sare-tf bench NAME` at tiny sizes through the real CLI: children, JSON reports, efficiency lines.

Figures are timings, so they are checked for being positive and finite, and every derived
figure (FLOPs, GFLOP/s, share of the peak) against its own hand-worked formula.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from sare_tf import cli
from sare_tf.bench.peak import (
    describe_efficiency,
    describe_peak,
    efficiency,
    measure_in_children,
)
from sare_tf.hardware import cpu_info

REPO = Path(__file__).resolve().parents[2]


def _report(path):
    report = json.loads(Path(path).read_text())
    assert report["cpu"] == cpu_info()
    assert len(report["load_average"]) == 3
    return report


def _positive(*values):
    return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


def _tiny_backbone_flops(height, width):
    """The 'tiny' backbone: 4 blocks of two 3x3 'same' convs (32, 64, 96, 128), 2x2 pooling."""
    total, channels = 0, 3
    for block, out_channels in enumerate((32, 64, 96, 128)):
        positions = (height >> block) * (width >> block)
        for _ in range(2):
            total += 2 * positions * 9 * channels * out_channels
            channels = out_channels
    return total


@pytest.fixture
def fake_peak(tmp_path):
    """A peak report with round figures, so shares of the peak can be checked exactly."""
    path = tmp_path / "peak.json"
    rows = [
        {"dtype": "float32", "supported": True, "gflops": 50.0},
        {"dtype": "bfloat16", "supported": False, "error": "could not create a primitive"},
    ]
    path.write_text(json.dumps({"results": rows}))
    return path


def test_efficiency_line_reads_throughput_against_the_peak_of_the_compute_dtype():
    peaks = {"bfloat16": {"dtype": "bfloat16", "supported": True, "gflops": 440.0}}
    result = efficiency(2.39 * 188e9, "mixed_bfloat16", peaks)
    assert result == {
        "gflops": 449.3,  # 2.39 img/s x 188 GFLOP
        "peak_dtype": "bfloat16",
        "peak_gflops": 440.0,
        "fraction_of_peak": 1.021,
    }
    assert describe_efficiency("bf16", "2.39 img/s", result) == (
        "bf16: 2.39 img/s = 449 GFLOP/s = 102% of this CPU's measured bfloat16 conv peak "
        "(440 GFLOP/s)"
    )
    unsupported = {"bfloat16": {"dtype": "bfloat16", "supported": False, "error": "no kernel"}}
    for missing in (None, {}, unsupported):
        result = efficiency(2.39 * 188e9, "mixed_bfloat16", missing)
        assert result["fraction_of_peak"] is None
        assert describe_efficiency("bf16", "2.39 img/s", result).endswith(
            "= 449 GFLOP/s (no measured bfloat16 conv peak to compare with)"
        )


def test_bench_help_lists_every_benchmark_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for name in ("peak", "extraction", "training", "mining", "pipeline", "retrieval", "serve",
                 "index", "import_checkpoint"):  # fmt: skip
        assert f"    {name}" in printed
    with pytest.raises(SystemExit):
        cli.main(["bench", "extraction", "--help"])
    assert "--no-peak" in capsys.readouterr().out


@pytest.mark.slow
def test_peak_measures_each_dtype_in_a_child(tmp_path, capsys):
    out = tmp_path / "peak.json"
    argv = ["bench", "peak", "--height", "12", "--width", "16", "--channels", "16",
            "--batch-size", "2", "--warmup", "1", "--rounds", "2", "--iterations", "2",
            "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    report = _report(out)
    assert report["benchmark"] == "peak"
    rows = {row["dtype"]: row for row in report["results"]}
    assert set(rows) == {"float32", "bfloat16"}
    if cpu_info()["bf16"] == "none":  # oneDNN may have no bf16 convolution at all
        rows.pop("bfloat16")
    for row in rows.values():
        assert row["supported"] is True
        assert row["flops_per_call"] == 2 * (2 * 12 * 16) * (3 * 3 * 16 * 16)
        assert len(row["rounds"]) == 2 and _positive(row["gflops"], *row["rounds"])
        assert row["gflops"] == max(row["rounds"])
    assert "float32 conv peak:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 oneDNN ISA cap")
def test_peak_reports_bf16_unsupported_when_onednn_has_no_bf16_convolution():
    # Capped at AVX2, oneDNN has no bf16 convolution: the child must answer, not crash. Where
    # TensorFlow does not hand bf16 convolutions to oneDNN at all (CPUs without AVX-512, such
    # as a Zen 3 EPYC, take its Eigen kernels), the child measures them instead: then the
    # answer is a measured row.
    tiny = {"height": 6, "width": 8, "channels": 8, "batch_size": 1, "warmup": 1, "rounds": 1}
    result = measure_in_children(
        ["bfloat16"], tiny, env={"ONEDNN_MAX_CPU_ISA": "AVX2"}, verbose=False
    )["bfloat16"]
    assert "failed" not in result
    if result["supported"]:
        assert "avx512" not in cpu_flags()  # only where oneDNN is not the bf16 path
        # A measured row (this tiny convolution in emulated bf16 may round to 0.0 GFLOP/s).
        assert result["flops_per_call"] > 0 and len(result["rounds"]) == 1
        assert result["gflops"] >= 0 and describe_peak(result).startswith("bfloat16 conv peak:")
        return
    assert "primitive descriptor" in result["error"]
    assert describe_peak(result).startswith("bfloat16 conv peak: not supported on this CPU")


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return ""


@pytest.mark.slow
def test_extraction_reports_gflops_and_share_of_the_peak(tmp_path, fake_peak, capsys):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "extraction.json"
    argv = ["bench", "extraction", "--backbone", "tiny", "--num-clusters", "4",
            "--height", "32", "--width", "48", "--batch-size", "2", "--batches", "1",
            "--rounds", "2", "--precision", "float32", "--part", "full",
            "--runtime", "tf", "litert", "--quantize", "int8", "--calibration-count", "4",
            "--peak-json", str(fake_peak), "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    report = _report(out)
    row, exported = report["results"]
    # The exported runtime: its ratio to TF in the same report, read against the float32 peak.
    assert (exported["runtime"], exported["precision"]) == ("litert", "int8")
    ratio = exported["images_per_second"] / row["images_per_second"]
    assert exported["ratio_to_tf_float32"] == pytest.approx(ratio, abs=1e-3)
    assert exported["peak_dtype"] == "float32" and exported["peak_gflops"] == 50.0
    assert exported["cosine_to_float32"]["min"] >= 0.98  # the stated int8 tolerance (tiny model)
    assert exported["conv_flops_per_image"] == _tiny_backbone_flops(32, 48)
    assert row["part"] == "full" and row["precision"] == "float32"
    assert len(row["rounds"]) == 2 and row["images_per_second"] == max(row["rounds"])
    assert _positive(row["images_per_second"], row["gflops"])
    assert row["conv_flops_per_image"] == _tiny_backbone_flops(32, 48)
    gflops = row["images_per_second"] * row["conv_flops_per_image"] / 1e9
    assert row["gflops"] == pytest.approx(gflops, abs=0.05)
    assert row["peak_gflops"] == 50.0
    assert row["fraction_of_peak"] == pytest.approx(gflops / 50.0, abs=1e-3)
    printed = capsys.readouterr().out
    assert "of this CPU's measured float32 conv peak (50 GFLOP/s)" in printed
    assert "x TF float32, descriptor cosine to Keras float32 min" in printed


def test_extraction_measures_each_mode_where_its_runtime_has_it():
    import argparse

    from sare_tf.bench.extraction import configurations

    args = argparse.Namespace(
        runtime=["tf", "onnx", "litert"], precision=["float32", "mixed_bfloat16"],
        part=["backbone", "full"], quantize=["none", "dynamic", "int8"],
    )  # fmt: skip
    assert configurations(args) == [
        ("tf", "float32", "backbone"), ("tf", "float32", "full"),
        ("tf", "mixed_bfloat16", "backbone"), ("tf", "mixed_bfloat16", "full"),
        ("onnx", "none", "full"), ("onnx", "int8", "full"),  # ONNX has no dynamic mode
        ("litert", "none", "full"), ("litert", "dynamic", "full"), ("litert", "int8", "full"),
    ]  # fmt: skip


@pytest.mark.slow
def test_training_reports_tuples_per_second_split_and_pytorchs_same_step(tmp_path, fake_peak):
    pytest.importorskip("torch")
    out = tmp_path / "training.json"
    argv = ["bench", "training", "--backbone", "tiny", "--image-size", "32", "32",
            "--num-negatives", "1", "--num-clusters", "4", "--steps", "2", "--batch-tuples", "2",
            "--precisions", "float32", "--epoch-queries", "100", "--db-images", "300",
            "--refresh-every", "40", "--peak-json", str(fake_peak), "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    report = _report(out)
    rows = {row["framework"]: row for row in report["results"]}
    assert set(rows) == {"sare_tf", "torch"}
    for row in rows.values():
        assert row["images_per_tuple"] == 3 and len(row["step_seconds"]) == 2
        assert _positive(row["tuples_per_second"], row["images_per_second"], row["warmup_seconds"])
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        split = row["split_seconds"]
        assert split["step"] == pytest.approx(statistics.median(row["step_seconds"]), abs=2e-4)
        assert split["forward"] > 0 and split["backward"] >= 0 and split["optimizer"] >= 0
        assert 2 / row["tuples_per_second"] == pytest.approx(split["step"], abs=1e-4)  # rounded
        # The tiny backbone is trainable throughout, so the backward estimate is 3x the forward.
        assert row["conv_flops_per_image"] == row["trainable_conv_flops_per_image"]
        assert row["conv_flops_per_image"] == _tiny_backbone_flops(32, 32)
        forward = row["images_per_second"] * row["conv_flops_per_image"] / 1e9
        assert row["forward"]["gflops"] == pytest.approx(forward, abs=0.05)
        assert row["forward"]["fraction_of_peak"] == pytest.approx(forward / 50.0, abs=1e-3)
        assert row["with_backward_estimate"]["gflops"] == pytest.approx(3 * forward, abs=0.05)
        # Mining: round(100 / 40) = 2 refreshes of 400 images at the measured inference rate.
        mining = row["mining"]
        encode = 400 / row["inference_images_per_second"]
        train = 100 / row["tuples_per_second"]
        assert mining["refreshes_per_epoch"] == 2
        assert mining["share"] == pytest.approx(2 * encode / (2 * encode + train), abs=1e-3)
    ratio = rows["sare_tf"]["tuples_per_second"] / rows["torch"]["tuples_per_second"]
    assert rows["sare_tf"]["ratio_to_torch"] == pytest.approx(ratio, abs=2e-3)
    assert rows["sare_tf"]["tuples_per_second_by_repeat"] == [rows["sare_tf"]["tuples_per_second"]]
    assert "ratio_to_torch_by_repeat" not in rows["sare_tf"]  # one repeat
    assert _positive(report["pipeline"]["tuples_per_second"])


def test_repeats_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "training", "--repeats", "0"])
    assert "--repeats: must be 1 or more. Received: 0" in capsys.readouterr().err


def test_training_repeats_keep_the_fastest_run_and_pair_ratios_by_repeat():
    from sare_tf.bench.training import _keep_fastest, _ratios

    fastest = {}
    for framework, rates in (("sare_tf", (0.5, 0.4, 0.6)), ("torch", (0.4, 0.5, 0.5))):
        for step, rate in enumerate(rates):
            run = {"framework": framework, "precision": "float32", "tuples_per_second": rate,
                   "step_seconds": [step]}  # fmt: skip
            _keep_fastest(fastest, framework, run)
    ours, theirs = fastest["sare_tf"], fastest["torch"]
    assert ours["tuples_per_second"] == 0.6 and ours["step_seconds"] == [2]
    assert theirs["step_seconds"] == [1]  # the first of the two fastest
    assert ours["tuples_per_second_by_repeat"] == [0.5, 0.4, 0.6]
    _ratios([ours, theirs])
    assert ours["ratio_to_torch"] == 1.2
    assert ours["ratio_to_torch_by_repeat"] == [1.25, 0.8, 1.2]


def test_pytorchs_reference_step_is_skipped_where_it_has_no_such_model(capsys):
    import argparse

    from sare_tf.bench.training import _frameworks

    args = argparse.Namespace(
        frameworks=["sare_tf", "torch"], backbone="resnet50", loss="sare-joint"
    )
    assert _frameworks(args) == ["sare_tf"]
    assert "measuring sare_tf alone (backbone='resnet50'" in capsys.readouterr().out
    args = argparse.Namespace(frameworks=["sare_tf", "torch"], backbone="vgg16", loss="triplet")
    assert _frameworks(args) == ["sare_tf"]
    args.loss = "sare-joint"
    assert _frameworks(args) == ["sare_tf", "torch"]


@pytest.mark.slow
def test_extraction_beside_pytorch_with_the_heads_stage_profile(tmp_path, fake_peak, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "extraction.json"
    argv = ["bench", "extraction", "--backbone", "tiny", "--num-clusters", "4",
            "--height", "32", "--width", "48", "--batch-size", "2", "--batches", "1",
            "--rounds", "1", "--precision", "float32", "--part", "full", "--repeats", "2",
            "--runtime", "tf", "torch", "--peak-json", str(fake_peak), "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    tf_row, torch_row = _report(out)["results"]
    assert len(tf_row["best_by_repeat"]) == len(torch_row["best_by_repeat"]) == 2
    assert len(tf_row["rounds"]) == 2 and tf_row["images_per_second"] == max(tf_row["rounds"])
    assert (tf_row["runtime"], torch_row["runtime"]) == ("tf", "torch")
    assert torch_row["conv_flops_per_image"] == tf_row["conv_flops_per_image"]
    ratio = tf_row["images_per_second"] / torch_row["images_per_second"]
    assert tf_row["ratio_to_torch"] == pytest.approx(ratio, abs=2e-3)
    profile = tf_row["stage_profile"]
    names = [row["stage"] for row in profile["stages"]]
    assert names == ["preprocess", "backbone", "cast to float32", "netvlad: normalise locations",
                     "netvlad: soft assignment", "netvlad: residual sums",
                     "netvlad: normalisations"]  # fmt: skip
    total = sum(row["ms_per_image"] for row in profile["stages"])
    head = sum(row["ms_per_image"] for row in profile["stages"][2:])
    assert profile["stages_ms_per_image"] == pytest.approx(total)
    assert profile["head_share"] == pytest.approx(head / total)
    assert sum(row["share"] for row in profile["stages"]) == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "x PyTorch (same part and precision)" in printed
    assert "(repeat 2 of 2)" in printed and "per repeat " in printed
    assert "head (after the backbone):" in printed


def test_extraction_repeats_keep_the_best_round_and_pair_ratios_by_repeat():
    from sare_tf.bench.extraction import _merge_repeat, _ratios

    def row(runtime, rounds):
        best = max(rounds)
        return {"runtime": runtime, "precision": "float32", "part": "full",
                "images_per_second": best, "rounds": rounds, "best_by_repeat": [best]}  # fmt: skip

    tf_row, torch_row = row("tf", [0.9, 1.0]), row("torch", [0.8])
    _merge_repeat(tf_row, row("tf", [1.2, 1.1]))
    _merge_repeat(torch_row, row("torch", [1.1, 1.0]))
    assert tf_row["rounds"] == [0.9, 1.0, 1.2, 1.1] and tf_row["images_per_second"] == 1.2
    assert tf_row["best_by_repeat"] == [1.0, 1.2] and torch_row["best_by_repeat"] == [0.8, 1.1]
    _ratios([tf_row, torch_row])
    assert tf_row["ratio_to_torch"] == round(1.2 / 1.1, 3)
    assert tf_row["ratio_to_torch_by_repeat"] == [1.25, round(1.2 / 1.1, 3)]


def test_the_stage_profile_runs_the_models_own_computation():
    """Chaining the profiled stages gives the model's descriptors (NetVLAD, and GeM + whitening)."""
    import keras
    import numpy as np

    from sare_tf.bench.stage_profile import model_stages
    from sare_tf.layers import GeM, PCAWhitening
    from sare_tf.model import PlaceEmbedding

    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype("float32")
    netvlad = PlaceEmbedding("tiny", input_shape=(None, None, 3))
    netvlad.aggregator.set_centroids(np.random.default_rng(1).normal(size=(64, 128)), 10.0)
    whitened = PlaceEmbedding("tiny", aggregator=GeM(name="gem"), whitening=PCAWhitening(16))
    for model in (netvlad, whitened):
        value = images
        for _, function in model_stages(model):
            value = function(value)
        np.testing.assert_allclose(np.asarray(value), np.asarray(model(images)), atol=1e-5)


def test_mining_pipeline_and_retrieval_write_their_reports(tmp_path):
    mining = tmp_path / "mining.json"
    argv = ["bench", "mining", "--dims", "32", "--num-queries", "60", "--num-db", "200",
            "--num-candidates", "50", "--area-side-m", "40", "--json", str(mining)]  # fmt: skip
    assert cli.main(argv) == 0
    (row,) = _report(mining)["results"]
    assert row["dim"] == 32 and row["valid_queries"] > 0
    assert row["input_gib"] == round((60 * 32 * 2 + 200 * 32 * 4) / 2**30, 3)
    assert row["seconds"] >= 0 and _positive(row["peak_rss_gib"])

    pipeline = tmp_path / "pipeline.json"
    argv = ["bench", "pipeline", "--settings", "48x64:24x32", "--batches", "2",
            "--batch-size", "2", "--num-negatives", "1", "--work-dir", str(tmp_path / "work"),
            "--json", str(pipeline)]  # fmt: skip
    assert cli.main(argv) == 0
    (row,) = _report(pipeline)["results"]
    assert row["batch_shape"] == [2, 3, 24, 32, 3] and row["images"] == 2 * 2 * 3
    assert _positive(row["images_per_s"], row["tuples_per_s"])

    retrieval = tmp_path / "retrieval.json"
    argv = ["bench", "retrieval", "--part", "exact", "--num-queries", "20", "--num-db", "200",
            "--dim", "16", "--json", str(retrieval)]  # fmt: skip
    assert cli.main(argv) == 0
    exact = _report(retrieval)["exact"]
    assert exact["queries"] == 20 and 0 <= exact["R@1"] <= exact["R@20"] <= 100

    argv = ["bench", "retrieval", "--part", "compressed", "--cmp-num-queries", "30",
            "--cmp-num-db", "1200", "--cmp-dim", "16", "--cmp-variance-decay", "1",
            "--nlist", "4", "--pq-m", "4", "--nbits", "4", "--refine-factor", "2",
            "--indexes", "ivfpq", "ivfpq-opq", "ivfpq-m2x", "ivfpq-refine",
            "--json", str(retrieval)]  # fmt: skip
    assert cli.main(argv) == 0
    compressed = _report(retrieval)["compressed"]
    assert compressed["variance_decay"] == 1.0
    rows = compressed["indexes"]
    assert [row["index"] for row in rows] == ["flat", "ivfpq", "ivfpq+opq", "ivfpq", "ivfpq+refine"]
    # Bytes per vector: 4 B x 16 dims; m x 4 bits + an 8-byte id; the refine adds the raw vector.
    assert [row["bytes_per_vector"] for row in rows] == [64.0, 10.0, 10.0, 12.0, 74.0]
    assert "m=8" in rows[3]["params"] and rows[0]["max_delta_points"] == 0.0
    for row in rows:
        assert 0 <= row["R@1"] <= row["R@20"] <= 100
        deltas = [abs(row[f"R@{n}"] - rows[0][f"R@{n}"]) for n in (1, 5, 10, 20)]
        assert row["max_delta_points"] == pytest.approx(max(deltas), abs=0.011)


def test_retrieval_parts_run_separately_keep_separate_default_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "retrieval", "--part", "exact", "--num-queries", "20", "--num-db", "200",
            "--dim", "16"]  # fmt: skip
    assert cli.main(argv) == 0
    argv = ["bench", "retrieval", "--part", "compressed", "--cmp-num-queries", "30",
            "--cmp-num-db", "1200", "--cmp-dim", "16", "--nlist", "4", "--pq-m", "4",
            "--nbits", "4", "--indexes", "ivfpq"]  # fmt: skip
    assert cli.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "bench").iterdir()) == [
        "retrieval_compressed.json",
        "retrieval_exact.json",
    ]
    assert "exact" in _report(tmp_path / "runs/bench/retrieval_exact.json")
    assert "compressed" in _report(tmp_path / "runs/bench/retrieval_compressed.json")


def test_a_failing_child_is_an_error_message_not_a_traceback(tmp_path, capsys):
    argv = ["bench", "mining", "--dims", "8", "--num-queries", "5", "--num-db", "0",
            "--json", str(tmp_path / "m.json")]  # fmt: skip
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "sare-tf bench: error: the benchmark child process failed (exit code 1)" in error
    assert "-m sare_tf.bench mining --child-dim 8" in error


def test_scripts_are_thin_wrappers_of_the_package(tmp_path):
    out = tmp_path / "mining.json"
    command = [sys.executable, str(REPO / "scripts" / "bench_mining.py"), "--dims", "16",
               "--num-queries", "20", "--num-db", "50", "--num-candidates", "20",
               "--json", str(out)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert _report(out)["results"][0]["dim"] == 16
    for name in ("extraction", "training", "pipeline", "retrieval"):
        script = (REPO / "scripts" / f"bench_{name}.py").read_text()
        assert f"sare-tf bench {name}" in script and len(script.splitlines()) < 20


@pytest.mark.slow
def test_index_and_import_benchmarks_at_tiny_size(tmp_path):
    out = tmp_path / "index.json"
    assert cli.main(["bench", "index", "--num-db", "3000", "--num-queries", "20", "--dim", "32",
                     "--pq-m", "8", "--nlist", "16", "--json", str(out)]) == 0  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert results["build"]["count"] == 3000 and results["build"]["peak_gib"] > 0
    assert 0 <= results["query"]["recall@1"] <= 1 and results["query"]["query_ms_median"] > 0
    assert results["recall_points_lost"] == pytest.approx(
        100 * (results["exact"]["recall@1"] - results["query"]["recall@1"]), abs=0.01
    )
    pytest.importorskip("torch")
    out = tmp_path / "import.json"
    assert cli.main(["bench", "import_checkpoint", "--channels-divisor", "16", "--num-clusters", "4",
                     "--pca-dim", "32", "--image-size", "48", "64", "--json", str(out)]) == 0  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert results["model"]["descriptor_dim"] == 32 and results["cosine_min"] >= 0.9999
    assert results["import_seconds"] > 0 and results["import_peak_gib"] > 0


@pytest.mark.slow
def test_models_times_sare_tf_beside_pytorch_in_the_same_run(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "models.json"
    assert cli.main(["bench", "models", "--models", "cosplace-resnet18", "--batch-size", "1",
                     "--batches", "1", "--rounds", "1", "--json", str(path)]) == 0  # fmt: skip
    report = _report(path)
    (result,) = report["results"]
    assert result["model"] == "cosplace-resnet18" and result["image_size"] == [512, 512]
    assert _positive(result["sare_tf"], result["torch"])
    assert result["ratio"] == pytest.approx(result["sare_tf"] / result["torch"])
    assert "cosplace-resnet18" in capsys.readouterr().out
