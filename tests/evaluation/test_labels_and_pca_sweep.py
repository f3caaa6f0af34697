"""Label ground truth (Sf-0's building-ID protocol) and the PCA sweep (Table 5), against
brute-force references and separate evaluations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sare_tf.cli import main
from sare_tf.data import GeoDataset
from sare_tf.evaluation.pca_sweep import parse_pca_dims, pca_sweep, reduce_descriptors
from sare_tf.evaluation.recall import evaluate_retrieval


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force_label_recall(query_desc, db_desc, query_labels, db_labels, n):
    hits = 0
    for q in range(len(query_desc)):
        scores = [float(np.dot(query_desc[q], db_desc[d])) for d in range(len(db_desc))]
        ranked = sorted(range(len(db_desc)), key=lambda d: (-scores[d], d))[:n]
        hits += any(query_labels[q] != "" and db_labels[d] == query_labels[q] for d in ranked)
    return hits / len(query_desc)


def test_label_recall_equals_a_brute_force_reference():
    rng = np.random.default_rng(0)
    db_labels = rng.choice(["b1", "b2", "b3", "b4", "b5", ""], size=60)
    query_labels = rng.choice(["b1", "b2", "b3", "b9", ""], size=25)  # b9: no database image
    centres = {label: rng.normal(size=16) for label in ["b1", "b2", "b3", "b4", "b5", "b9", ""]}
    db_desc = _unit(np.stack([centres[label] + rng.normal(0, 1.2, 16) for label in db_labels]))
    query_desc = _unit(
        np.stack([centres[label] + rng.normal(0, 1.2, 16) for label in query_labels])
    )
    far = np.full((60, 2), 1e6) * np.arange(1, 61)[:, None]  # positions must not matter
    result = evaluate_retrieval(
        query_desc, db_desc, np.zeros((25, 2)), far, ns=(1, 5, 10),
        query_labels=query_labels, db_labels=db_labels,
    )  # fmt: skip
    for n in (1, 5, 10):
        expected = _brute_force_label_recall(query_desc, db_desc, query_labels, db_labels, n)
        assert result.recalls[n] == pytest.approx(expected)
    assert 0 < result.recalls[1] < result.recalls[10] < 1
    unmatched = np.sum((query_labels == "b9") | (query_labels == ""))
    assert result.num_without_positive == unmatched


def test_a_csv_label_column_gives_label_positives(tmp_path):
    (tmp_path / "sf.csv").write_text(
        "path,lat,lon,split,building_id\n"
        "db/0.jpg,37.7900,-122.4000,db,17\ndb/1.jpg,37.7901,-122.4000,db,17\n"
        "db/2.jpg,37.7950,-122.4050,db,23\ndb/3.jpg,37.7950,-122.4051,db,\n"
        "q/0.jpg,37.7902,-122.4001,query,23\nq/1.jpg,37.7000,-122.5000,query,17\n"
    )
    ds = GeoDataset.from_csv(tmp_path / "sf.csv")
    assert ds.has_labels and ds.db_labels.tolist() == ["17", "17", "23", ""]
    assert [p.tolist() for p in ds.label_positives()] == [[2], [0, 1]]
    assert [p.tolist() for p in ds.positives(25.0)] == [[1, 0], []]  # distance says otherwise
    assert ds.subset(query_ids=[1]).label_positives()[0].tolist() == [0, 1]


def test_each_pca_size_equals_a_separate_evaluation_at_that_size():
    from sare_tf.layers import PCAWhitening

    rng = np.random.default_rng(1)
    db_utm = rng.uniform(0, 300, (80, 2))
    query_utm = db_utm[:30] + rng.normal(0, 5, (30, 2))
    db_desc = _unit(rng.normal(size=(80, 48)) + db_utm @ rng.normal(size=(2, 48)) / 100)
    query_desc = _unit(db_desc[:30] + rng.normal(0, 0.3, (30, 48)))

    def evaluate(q, d):
        return evaluate_retrieval(q, d, query_utm, db_utm, ns=(1, 5))

    swept = pca_sweep(query_desc, db_desc, parse_pca_dims("32,16,4"), evaluate)
    for dim, result in swept.items():
        layer = PCAWhitening(dim).fit(db_desc)  # a separate fit at that size
        separate = evaluate(
            np.asarray(layer(query_desc.astype(np.float32))),
            np.asarray(layer(db_desc.astype(np.float32))),
        )
        assert result.recalls == pytest.approx(separate.recalls), dim
        assert np.array_equal(result.first_correct_rank, separate.first_correct_rank)
    reduced = reduce_descriptors(db_desc, db_desc.mean(0), np.eye(48), 5)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="distinct positive"):
        parse_pca_dims("64,64")


def test_evaluate_command_with_labels_and_a_pca_sweep(tiny_model, tmp_path, jpeg_writer, capsys):
    rows = ["path,utm_east,utm_north,split,label"]
    for i in range(12):
        jpeg_writer(tmp_path / f"db{i}.jpg", 48, 64, seed=i)
        rows.append(f"db{i}.jpg,{100 * i},0,db,b{i % 4}")
    for i in range(4):
        jpeg_writer(tmp_path / f"q{i}.jpg", 48, 64, seed=i)  # the same picture as db{i}
        rows.append(f"q{i}.jpg,{100 * i + 5000},0,query,b{i}")
    (tmp_path / "sf.csv").write_text("\n".join(rows) + "\n")
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    argv = ["evaluate", "--model", str(keras_path), "--dataset", str(tmp_path / "sf.csv"),
            "--ground-truth", "labels", "--pca-dims", "8,4", "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    metrics = report["models"]["tiny"]
    assert report["ground_truth"] == "labels"
    assert metrics["recall@1"] == 1.0  # identical pictures share the label; positions 5 km off
    assert set(metrics["pca_sweep"]) == {"fitted_on", "8", "4"}
    assert "Recall@N per PCA-whitened descriptor size" in capsys.readouterr().out
    (tmp_path / "nolabels.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    argv[4] = str(tmp_path / "nolabels.csv")
    capsys.readouterr()
    assert main(argv) != 0
    assert "carries no place labels" in capsys.readouterr().err
