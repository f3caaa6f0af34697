"""The synthetic descriptor generator used by the retrieval benchmark, and a benchmark smoke run."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from sare_tf.evaluation.recall import evaluate_retrieval
from sare_tf.evaluation.synthetic_descriptors import SyntheticPlaceDescriptors


def test_generator_geometry_norms_and_determinism(tmp_path):
    synthetic = SyntheticPlaceDescriptors(dim=32, num_places=50, seed=3)
    xb, db_utm = synthetic.sample(400, seed_offset=1, chunk=64)
    places = synthetic.last_place_ids
    assert xb.dtype == np.float32 and xb.shape == (400, 32)
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    # Images lie within the jitter of their place on the 30 m grid.
    assert np.all(np.abs(db_utm - synthetic.place_utm[places]) <= 5.0)
    # Same seed and stream: same data, also when written into a memmap.
    out = np.lib.format.open_memmap(
        tmp_path / "xb.npy", mode="w+", dtype=np.float32, shape=(400, 32)
    )
    again, again_utm = SyntheticPlaceDescriptors(dim=32, num_places=50, seed=3).sample(
        400, 1, out=out
    )
    np.testing.assert_array_equal(np.asarray(again), xb)
    np.testing.assert_array_equal(again_utm, db_utm)
    # Images of one place are more alike than images of different places.
    similarity = xb @ xb.T
    same = places[:, None] == places[None, :]
    np.fill_diagonal(same, False)
    assert similarity[same].mean() > similarity[~same].mean() + 0.2


def test_the_task_is_neither_trivial_nor_hopeless():
    synthetic = SyntheticPlaceDescriptors(dim=256, num_places=1000, seed=0)
    xb, db_utm = synthetic.sample(8000, seed_offset=1)
    xq, query_utm = synthetic.sample(500, seed_offset=2)
    recalls = evaluate_retrieval(xq, xb, query_utm, db_utm, ns=(1, 20)).recalls
    assert 0.6 < recalls[1] < 0.99 and recalls[20] > recalls[1]


def test_bench_retrieval_script_runs_at_tiny_size(tmp_path, capsys):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench_retrieval.py")
    spec = importlib.util.spec_from_file_location("bench_retrieval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = [
        "--num-queries", "40", "--num-db", "400", "--dim", "64",
        "--cmp-num-queries", "100", "--cmp-num-db", "3000", "--cmp-dim", "32",
        "--nlist", "16", "--nprobe", "16", "--nbits", "6", "--json", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    exact = report["exact"]
    assert exact["queries"] == 40 and exact["total_s"] >= exact["search_s"] >= 0.0
    assert set(exact) >= {"R@1", "R@20", "ms_per_query", "peak_rss_gb"}
    labels = sorted(row["index"] for row in report["compressed"]["indexes"])
    # Default set: IVF-PQ at m and at 2 x m, with OPQ, with re-ranking, HNSW, and exact.
    assert labels == sorted(["flat", "ivfpq", "ivfpq", "ivfpq+opq", "ivfpq+refine", "hnsw"])
    rows = {row["index"]: row for row in report["compressed"]["indexes"]}
    assert rows["flat"]["max_delta_points"] == 0.0
    # Re-ranking the shortlist with exact vectors recovers exact search on this easy setting.
    assert rows["ivfpq+refine"]["max_delta_points"] <= 1.0
    printed = capsys.readouterr().out
    assert "TOTAL s" in printed and "max |dR| pts" in printed
    with pytest.raises(SystemExit):
        bench.main(["--part", "nope"])
