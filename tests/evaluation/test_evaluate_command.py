"""`sare-tf evaluate` end to end: .keras and SavedModels of the same model give the same recalls."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sare_tf.cli import main


def save_contract_saved_model(model, export_dir):
    """A SavedModel with exactly the DESIGN.md serving contract, written without sare_tf.export:
    `serving_default`: `image` float32 [None, None, None, 3] -> `descriptor`."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image: {"descriptor": model(image, training=False)},
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="image")],
    )
    archive.write_out(str(export_dir))


@pytest.mark.slow
def test_evaluate_command_keras_and_saved_models_agree(tiny_model, tiny_city, tmp_path):
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    contract_dir = tmp_path / "serving" / "contract" / "1"
    save_contract_saved_model(tiny_model, contract_dir)
    models = [str(keras_path), str(contract_dir.parent)]  # a TF Serving root: newest version
    from sare_tf.export import export_saved_model

    exported = tmp_path / "exported"  # the exporter's SavedModel, beside the contract one
    export_saved_model(tiny_model, str(exported), image_size=(60, 80))
    models.append(str(exported))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "sare_tf",
        "evaluate",
        "--model",
        *models,
        "--dataset",
        tiny_city["test"],
        "--out",
        str(out),
        "--tsne",
        "--keep-descriptors",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "recall@1  recall@5  recall@10  recall@20" in completed.stdout

    report = json.loads((out / "metrics.json").read_text())
    names = list(report["models"])
    assert names[:2] == ["tiny", "contract/1"] and len(names) == len(models)
    first = report["models"]["tiny"]
    for name in names:
        entry = report["models"][name]
        for key in ("recall@1", "recall@5", "recall@10", "recall@20", "recall_curve"):
            assert entry[key] == first[key], (name, key)
        assert len(entry["recall_curve"]) == 25
        assert entry["num_queries"] == 12
    assert [report["models"][n]["kind"] for n in names[:2]] == ["keras", "saved_model"]
    # Same descriptors, not just the same recalls.
    reference = np.load(out / "descriptors" / "tiny" / "query_descriptors.npy")
    for name in names[1:]:
        other = np.load(out / "descriptors" / name.replace("/", "_") / "query_descriptors.npy")
        np.testing.assert_allclose(other, reference, atol=1e-5)

    # The printed table shows the stored values (in %).
    assert f"{100 * first['recall@5']:.2f}" in completed.stdout
    for png in [
        out / "recall_curve.png",
        *(out / f"tsne_{n.replace('/', '_')}.png" for n in names),
        *(out / f"tsne_images_{n.replace('/', '_')}.png" for n in names),
    ]:
        assert png.stat().st_size > 8_000
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def test_evaluate_command_reports_bad_arguments(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--dataset", str(tmp_path)]) == 2
    assert "Model not found" in capsys.readouterr().err
    assert main(["evaluate", "--model", "x.keras", "--dataset", str(tmp_path / "none.mat")]) == 2
    assert "Dataset not found" in capsys.readouterr().err


def test_evaluate_command_map_on_an_oxford_style_folder(tiny_model, tmp_path, jpeg_writer, capsys):
    from sare_tf.evaluation import evaluate_benchmark, load_oxford_paris

    gt, images = tmp_path / "gt", tmp_path / "jpg" / "sub"
    gt.mkdir()
    images.mkdir(parents=True)
    for i in range(6):
        jpeg_writer(images / f"tower_{i:06d}.jpg", 48, 64, seed=40 + i)
    (gt / "tower_1_query.txt").write_text("oxc1_tower_000000 2 2 50 40\n")
    (gt / "tower_1_good.txt").write_text("tower_000000\ntower_000004\n")
    (gt / "tower_1_ok.txt").write_text("")
    (gt / "tower_1_junk.txt").write_text("tower_000005\n")
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(keras_path), "--dataset", str(gt)]
    assert main([*argv, "--image-root", str(tmp_path / "jpg"), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    expected = evaluate_benchmark(
        tiny_model, load_oxford_paris(gt, tmp_path / "jpg"), progress=False
    )
    assert report["models"]["tiny"]["map"] == pytest.approx(expected["map"], abs=1e-9)
    assert "mAP on gt" in capsys.readouterr().out


def test_evaluate_uses_the_image_size_the_model_records_and_says_so(
    tiny_model, tiny_city, tmp_path, capsys
):
    """Issue 19.6: without --image-size, evaluate ran at the images' native size."""
    from sare_tf.artifacts import store_image_size

    store_image_size(tiny_model, (32, 48))
    path = tmp_path / "sized.keras"
    tiny_model.save(path)
    base = ["evaluate", "--model", str(path), "--dataset", tiny_city["test"], "--quiet"]
    assert main([*base, "--out", str(tmp_path / "own"), "--keep-descriptors"]) == 0
    printed = capsys.readouterr().out
    assert "at 32x48 image size" in printed
    header = next(line for line in printed.splitlines() if line.startswith("model "))
    row = printed.splitlines()[printed.splitlines().index(header) + 2]
    assert "image size" in header and row.split()[:2] == ["sized", "32x48"]
    assert "image/s" not in printed  # --quiet: no progress bars
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())["models"]["sized"]
    assert own["image_size"] == [32, 48]
    assert main([*base, "--out", str(tmp_path / "asked"), "--image-size", "32", "48",
                 "--keep-descriptors"]) == 0  # fmt: skip
    asked = json.loads((tmp_path / "asked" / "metrics.json").read_text())["models"]["sized"]
    for key in ("recall@1", "recall@5", "recall@10"):
        assert own[key] == asked[key]
    descriptors = [
        np.load(tmp_path / run / "descriptors" / "sized" / "query_descriptors.npy")
        for run in ("own", "asked")
    ]
    np.testing.assert_allclose(descriptors[0], descriptors[1], atol=1e-6)
    # A model recording no size runs at native sizes, and the note says so.
    plain = tmp_path / "plain.keras"
    from sare_tf.models import build_embedding_model

    build_embedding_model("tiny", num_clusters=4).save(plain)
    assert main(["evaluate", "--model", str(plain), "--dataset", tiny_city["test"], "--quiet",
                 "--out", str(tmp_path / "plain")]) == 0  # fmt: skip
    assert "does not record the image size" in capsys.readouterr().out
    report = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert report["models"]["plain"]["image_size"] is None


def test_evaluate_quiet_prints_no_progress_bar(tiny_model, tiny_city, tmp_path, capsys):
    """Issue 19.8: evaluate had no --quiet."""
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    base = ["evaluate", "--model", str(path), "--dataset", tiny_city["test"]]
    assert main([*base, "--out", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr()
    assert "Extracting" in loud.err  # the library's log line (stderr), not a print
    assert main([*base, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert "Extracting" not in quiet.out + quiet.err and "image/s" not in quiet.out + quiet.err
    assert "Recall@N" in quiet.out


def test_a_garbage_keras_file_is_named_invalid_not_missing(tiny_city, tmp_path, capsys):
    """Issue 19.8: Keras's 'File not found' was passed through for an existing bad file."""
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"\x00 not a zip")
    assert main(["evaluate", "--model", str(garbage), "--dataset", tiny_city["test"]]) == 2
    err = capsys.readouterr().err
    assert "garbage.keras is not a valid .keras file" in err and "not found" not in err
