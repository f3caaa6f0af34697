"""The place index against evaluate's search, shards against one build, and its bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sare_tf.artifacts import DescriptorModel, load_descriptor_model
from sare_tf.data import GeoDataset
from sare_tf.encoding import encode
from sare_tf.index.faiss_search import IndexConfig, search
from sare_tf.index.store import IndexMismatchError, PlaceIndex, consensus, shard_range

IMAGE_SIZE = (48, 64)


@pytest.fixture(scope="module")
def test_split(tiny_city):
    return GeoDataset.from_dbstruct(tiny_city["test"])


def _build(model_path, dataset, folder, **kwargs):
    return PlaceIndex.build(
        load_descriptor_model(model_path), dataset.db_image_paths(), dataset.db_utm, folder,
        progress=False, **kwargs,
    )  # fmt: skip


def test_shard_ranges_cover_the_list_once():
    ranges = [shard_range(10, i, 3) for i in range(3)]
    assert ranges == [(0, 3), (3, 7), (7, 10)]
    assert shard_range(2, 3, 4) == (2, 2)  # more shards than images: empty shards
    assert [shard_range(10, i, 3, align=4) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="I/N"):
        shard_range(10, 3, 3)


def test_consensus_rule_and_confidence_by_hand():
    # Matches 0 and 2 are 10 m apart; 1 and 3 are far away: the group of 0 wins (2 members).
    positions = np.array([[0.0, 0.0], [500.0, 0.0], [10.0, 0.0], [900.0, 0.0]])
    similarities = np.array([0.9, 0.8, 0.7, 0.6])
    agreed = consensus(positions, similarities, radius_m=25.0)
    assert agreed["members"].tolist() == [True, False, True, False]
    expected = (0.9 * positions[0] + 0.7 * positions[2]) / 1.6
    np.testing.assert_allclose(agreed["position"], expected, atol=1e-6)
    # Printed distances sqrt(2 - 2s): d_in = sqrt(0.2), d_out = sqrt(0.4) -> 1 - sqrt(1/2)
    assert agreed["confidence"] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)
    # Three lesser matches agree on another place: the answer stays the best match's place
    # (a vote for the largest group was measured 21 points less accurate on the demo city).
    positions = np.array([[0.0, 0.0], [500.0, 0.0], [505.0, 0.0], [510.0, 0.0]])
    agreed = consensus(positions, np.array([0.9, 0.8, 0.7, 0.6]), radius_m=25.0)
    assert agreed["members"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(agreed["position"], [0.0, 0.0])
    assert agreed["confidence"] == pytest.approx(1 - np.sqrt(0.2) / np.sqrt(0.4), abs=1e-6)


def test_index_search_equals_evaluate_and_localize_agrees(tiny_model_file, test_split, tmp_path):
    index = _build(tiny_model_file, test_split, tmp_path / "index")
    loaded = load_descriptor_model(tiny_model_file)
    db_desc, db_ok = encode(loaded, test_split.db_image_paths(), progress=False)
    query_desc, _ = encode(loaded, test_split.query_image_paths(), progress=False)
    assert db_ok.all() and index.count == test_split.num_db
    D_ref, I_ref = search(query_desc, db_desc, k=10)
    D, ids = index.search(query_desc, k=10)
    np.testing.assert_array_equal(ids, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-6)
    answers = index.localize(query_desc, k=10)
    for answer, ids in zip(answers, I_ref, strict=True):
        assert [m["db_id"] for m in answer["matches"]] == ids.tolist()
        assert answer["position_top1"] == test_split.db_utm[ids[0]].tolist()
        assert 0.0 <= answer["confidence"] <= 1.0
    # The same answers from a fresh load and from the command line (JSON lines).
    reloaded = PlaceIndex.load(tmp_path / "index")
    assert reloaded.localize(query_desc[:3]) == answers[:3]
    photos = test_split.query_image_paths()[:3]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-m", "sare_tf", "localize", "--index", str(tmp_path / "index"), *photos,
         "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [[m["db_id"] for m in line["matches"]] for line in lines] == I_ref[:3].tolist()
    page = (tmp_path / "report.html").read_text()
    # Per photo: its plot, and the query with all 10 matches as thumbnails.
    assert page.count("alt='positions of the matches'") == 3
    assert page.count("data:image/jpeg;base64,") == 3 * 11


@pytest.mark.slow
@pytest.mark.parametrize("index_kind", ["flat", "ivfpq"])
def test_shards_built_apart_and_merged_equal_one_build(
    tiny_model_file, test_split, tmp_path, index_kind
):
    index = IndexConfig(
        index_kind, **({"nlist": 4, "m": 8, "nbits": 4} if index_kind == "ivfpq" else {})
    )
    whole = _build(tiny_model_file, test_split, tmp_path / "whole", index=index, chunk_size=8)
    shards = [
        _build(tiny_model_file, test_split, tmp_path / f"shard{i}", index=index, shard=(i, 3),
               chunk_size=8)
        for i in (2, 0, 1)
    ]  # fmt: skip
    merged = PlaceIndex.merge([s.folder for s in shards], tmp_path / "merged", progress=False)
    np.testing.assert_array_equal(merged.descriptors(), whole.descriptors())
    np.testing.assert_array_equal(merged.positions, whole.positions)
    assert merged.paths == whole.paths and merged.count == test_split.num_db
    queries, _ = encode(
        load_descriptor_model(tiny_model_file), test_split.query_image_paths(), progress=False
    )
    for got, expected in zip(merged.search(queries, 10), whole.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(IndexMismatchError, match=r"Missing: \[1\]"):
        PlaceIndex.merge(
            [shards[0].folder, shards[1].folder], tmp_path / "incomplete", progress=False
        )


def test_another_model_is_refused(tiny_model_file, test_split, tmp_path):
    import keras

    from sare_tf.models import build_embedding_model

    index = _build(tiny_model_file, test_split, tmp_path / "index")
    keras.utils.set_random_seed(2)
    other = build_embedding_model("tiny", num_clusters=4)
    with pytest.raises(IndexMismatchError, match="is not the model this index was built with"):
        index.check_model(DescriptorModel(other, "other", "other.keras", "keras", IMAGE_SIZE))
    with pytest.raises(IndexMismatchError):
        index.add(
            DescriptorModel(other, "other", "other.keras", "keras", IMAGE_SIZE),
            [],
            np.zeros((0, 2)),
        )


def test_add_appends_and_an_interrupted_add_leaves_the_index_intact(
    tiny_model_file, test_split, tmp_path, monkeypatch
):
    first = test_split.subset(db_ids=np.arange(20))
    rest = test_split.subset(db_ids=np.arange(20, test_split.num_db))
    index = _build(tiny_model_file, first, tmp_path / "index")
    before = json.loads((tmp_path / "index" / "manifest.json").read_text())
    loaded = load_descriptor_model(tiny_model_file)

    import sare_tf.index.store as module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed while writing the new generation

    monkeypatch.setattr(module, "write_text_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        index.add(loaded, rest.db_image_paths(), rest.db_utm, progress=False)
    monkeypatch.undo()
    intact = PlaceIndex.load(tmp_path / "index")
    assert intact.manifest == before and intact.count == 20
    grown = intact.add(loaded, rest.db_image_paths(), rest.db_utm, progress=False)
    whole = _build(tiny_model_file, test_split, tmp_path / "whole")
    assert grown.count == test_split.num_db and grown.paths == whole.paths
    np.testing.assert_allclose(grown.descriptors(), whole.descriptors(), atol=1e-6)
    assert sorted(os.listdir(tmp_path / "index")) == [
        "g0002-descriptors.npy", "g0002-paths.txt", "g0002-positions.npy", "g0002.faiss",
        "manifest.json",
    ]  # fmt: skip


def test_unreadable_images_are_skipped_and_counted(tiny_model_file, test_split, tmp_path):
    paths = [*test_split.db_image_paths()[:5], str(tmp_path / "missing.jpg")]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths.append(str(tmp_path / "bad.jpg"))
    positions = np.vstack([test_split.db_utm[:5], [[0, 0], [1, 1]]])
    index = PlaceIndex.build(
        load_descriptor_model(tiny_model_file), paths, positions, tmp_path / "i", progress=False
    )
    assert index.count == 5 and index.manifest["skipped"]["count"] == 2
    assert index.paths == paths[:5]
    # A chunk holding only unreadable images is skipped and counted too, not fatal.
    chunked = PlaceIndex.build(
        load_descriptor_model(tiny_model_file), paths, positions, tmp_path / "c", chunk_size=5,
        progress=False,
    )  # fmt: skip
    assert chunked.count == 5 and chunked.manifest["skipped"]["count"] == 2
    np.testing.assert_allclose(chunked.descriptors(), index.descriptors(), atol=1e-6)


def test_missing_or_damaged_index_files_are_named(tiny_model_file, test_split, tmp_path):
    with pytest.raises(FileNotFoundError, match="No place index"):
        PlaceIndex.load(tmp_path / "nowhere")
    _build(tiny_model_file, test_split.subset(db_ids=np.arange(8)), tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    (tmp_path / "index" / manifest["files"]["faiss"]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is damaged"):
        PlaceIndex.load(tmp_path / "index")
    (tmp_path / "index" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable place-index manifest"):
        PlaceIndex.load(tmp_path / "index")
    with pytest.raises(FileExistsError, match="already holds"):
        (tmp_path / "index" / "manifest.json").write_text(json.dumps(manifest))
        _build(tiny_model_file, test_split, tmp_path / "index")


@pytest.mark.slow
def test_a_killed_build_resumes(tiny_model_file, test_split, tiny_city, tmp_path):
    out = tmp_path / "index"
    command = [
        sys.executable, "-m", "sare_tf", "index", "build", "--model", tiny_model_file,
        "--dataset", tiny_city["test"], "--out", str(out), "--chunk-size", "2",
        "--batch-size", "2",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    deadline = time.time() + 240
    chunks = []
    while time.time() < deadline and len(chunks) < 3 and process.poll() is None:
        work = [d for d in os.listdir(out) if d.startswith(".work-")] if out.exists() else []
        chunks = [c for d in work for c in os.listdir(out / d) if c.endswith(".npz")]
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (out / "manifest.json").exists()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "Resuming:" in completed.stderr  # the store logs it (stderr), the command prints results
    resumed = PlaceIndex.load(out)
    clean = _build(tiny_model_file, test_split, tmp_path / "clean")
    np.testing.assert_allclose(resumed.descriptors(), clean.descriptors(), atol=1e-6)
    assert resumed.paths == clean.paths
    assert not [d for d in os.listdir(out) if d.startswith(".work-")]


def test_confidence_report_by_hand():
    from sare_tf.index.localize import confidence_report

    def answer(position, confidence):
        return {
            "matches": [1],
            "position": position,
            "position_top1": position,
            "confidence": confidence,
        }

    answers = [
        answer([0, 0], 0.9),
        answer([100, 0], 0.1),
        answer([0, 5], 0.4),
        {"error": "bad", "photo": "x"},
    ]
    report = confidence_report(answers, [[0, 0], [0, 0], [0, 0], [0, 0]], thresholds=(0.0, 0.3))
    assert report["accuracy"] == 0.5 and report["num_queries"] == 4
    assert report["rows"][0] == {
        "threshold": 0.0,
        "accepted": 0.75,
        "precision": 2 / 3,
        "recall": 1.0,
    }
    assert report["rows"][1] == {"threshold": 0.3, "accepted": 0.5, "precision": 1.0, "recall": 1.0}


@pytest.mark.slow
def test_todays_models_index_and_localize_through_their_exports(test_split, tiny_city, tmp_path):
    """A ResNet + GeM model exported as ONNX builds an index the `.keras` model's photos are
    localized against (one fingerprint across formats), from the command line."""
    from sare_tf.cli import main
    from sare_tf.model import build_embedding_model

    model = build_embedding_model("resnet18", aggregator="gem", fc_dim=16)
    model.image_size = (64, 96)
    model.save(tmp_path / "resnet.keras")
    assert main(["export", "--model", str(tmp_path / "resnet.keras"), "--format", "onnx",
                 "--name", "r18", "--root", str(tmp_path / "onnx"), "--quiet"]) == 0  # fmt: skip
    assert main(["index", "build", "--model", str(tmp_path / "onnx" / "r18"), "--dataset",
                 tiny_city["test"], "--out", str(tmp_path / "index"), "--quiet"]) == 0  # fmt: skip
    index = PlaceIndex.load(tmp_path / "index")
    keras_model = load_descriptor_model(tmp_path / "resnet.keras")
    queries, _ = encode(keras_model, test_split.query_image_paths()[:5], progress=False)
    db_desc, _ = encode(keras_model, test_split.db_image_paths(), progress=False)
    _, ids = index.search(queries, k=5)
    _, want = search(queries, db_desc, k=5)
    np.testing.assert_array_equal(ids, want)
    answers = index.localize(queries, k=5)
    assert [[m["db_id"] for m in a["matches"]] for a in answers] == want.tolist()
