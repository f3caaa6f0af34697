"""pytorch-NetVlad / Patch-NetVLAD checkpoints: written by real torch.save in the released schema,
read without torch, checked against a numpy forward pass written from the sources' definitions."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from torch_reference import (  # noqa: E402
    CHANNELS,
    NUM_CLUSTERS,
    PCA_DIM,
    as_float64,
    assert_matches,
    images,
    reference_descriptors,
    tiny_encoder_and_pool,
)

from sare_tf.convert import import_checkpoint  # noqa: E402
from sare_tf.convert.torch_checkpoint import UnsafeCheckpointError, read_torch_checkpoint  # noqa: E402


def _torch_model(vladv2: bool, wpca: bool, seed: int):
    encoder, pool = tiny_encoder_and_pool(torch, seed, vladv2)
    model = torch.nn.Module()
    model.add_module("encoder", encoder)
    model.add_module("pool", pool)
    if wpca:
        model.add_module(
            "WPCA", torch.nn.Sequential(torch.nn.Conv2d(NUM_CLUSTERS * CHANNELS, PCA_DIM, 1))
        )
    return model


def _save(model, path, legacy: bool):
    checkpoint = {"epoch": 7, "state_dict": model.state_dict(), "recalls": {1: 0.5, 5: 0.75},
                  "best_score": 0.75, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                  "parallel": False}  # fmt: skip
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return as_float64(model.state_dict())


@pytest.mark.parametrize(
    "legacy, vladv2, wpca",
    [(False, False, False), (True, True, True), (False, True, False), (True, False, True)],
    ids=["zip-v1", "legacy-v2-wpca", "zip-v2", "legacy-v1-wpca"],
)
def test_imported_model_matches_the_reference_forward_pass(tmp_path, legacy, vladv2, wpca):
    import keras

    path = tmp_path / "checkpoint.pth.tar"
    state = _save(_torch_model(vladv2, wpca, seed=1), path, legacy)
    sidecar = import_checkpoint(path, tmp_path / "imported.keras", trained_on="tests")
    assert sidecar["format"] == "pytorch-netvlad" and sidecar["checkpoint"]["epoch"] == 7
    assert sidecar["checkpoint"]["vladv2"] is vladv2
    expected_dim = PCA_DIM if wpca else NUM_CLUSTERS * CHANNELS
    assert sidecar["model"]["descriptor_dim"] == expected_dim
    assert sidecar["model"]["pca_dim"] == (PCA_DIM if wpca else None)
    import hashlib

    assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = keras.saving.load_model(tmp_path / "imported.keras", compile=False)
    projection = None
    if wpca:
        projection = (state["WPCA.0.weight"][:, :, 0, 0], state["WPCA.0.bias"])
    assert_matches(model, lambda x: reference_descriptors(state, x, projection=projection))


def test_the_reader_gives_what_torch_saved(tmp_path):
    nested = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "b": torch.tensor([1, 2], dtype=torch.int64),
              "c": torch.ones(2, dtype=torch.float16), "n": [torch.zeros(1), 3, "text"], "h": torch.tensor(2.5, dtype=torch.bfloat16)}  # fmt: skip
    for legacy in (False, True):
        path = tmp_path / f"nested_{legacy}.pth"
        torch.save(nested, path, _use_new_zipfile_serialization=not legacy)
        loaded = read_torch_checkpoint(path)
        np.testing.assert_array_equal(loaded["a"], nested["a"].numpy())  # a strided view
        assert loaded["b"].dtype == np.int64 and loaded["c"].dtype == np.float16
        assert loaded["n"][1:] == [3, "text"] and float(loaded["h"]) == 2.5
    # numpy arrays (the VG benchmark saves its recalls as one) are rebuilt from raw bytes only.
    arrays = {
        "recalls": np.array([[83.2, 91.0], [1.5, 2.5]]),
        "f": np.asfortranarray(np.eye(3)[:, :2]),
    }
    torch.save(arrays, tmp_path / "arrays.pth")
    loaded = read_torch_checkpoint(tmp_path / "arrays.pth")
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    torch.save({"o": np.array([{"a": 1}], dtype=object)}, tmp_path / "objects.pth")
    with pytest.raises(UnsafeCheckpointError, match="objects.pth: .*dtype"):
        read_torch_checkpoint(tmp_path / "objects.pth")


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _RunsAShellCommand(marker)}, protocol=2)
    # As a zip checkpoint (torch >= 1.6 layout) and as a plain legacy pickle.
    zipped = tmp_path / "evil.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/version", "3\n")
    legacy = tmp_path / "evil_legacy.pth.tar"
    legacy.write_bytes(payload)
    for path in (zipped, legacy):
        with pytest.raises(
            UnsafeCheckpointError, match=r"refusing to load the global (posix|os)\.system"
        ):
            read_torch_checkpoint(path)
        with pytest.raises(UnsafeCheckpointError):
            import_checkpoint(path, tmp_path / "out.keras")
    assert not marker.exists()
    assert not (tmp_path / "out.keras").exists()


def test_bad_state_dicts_name_the_key_and_leave_no_model(tmp_path):
    model = _torch_model(False, False, seed=5)
    state = model.state_dict()
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "pool.centroids"}, r"no 'pool.centroids'"),
        "unexpected": ({**state, "extra.weight": torch.zeros(2)}, r"unexpected keys .*extra.weight"),
        "shape": ({**state, "encoder.2.weight": torch.zeros(4, 3, 3, 3)}, r"'encoder.2.weight' has shape \(4, 3, 3, 3\)"),
    }  # fmt: skip
    for name, (broken, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"state_dict": broken}, path)
        out = tmp_path / f"{name}.keras"
        with pytest.raises(ValueError, match=message):
            import_checkpoint(path, out)
        assert not out.exists() and not os.path.exists(f"{out}.json")
    good = tmp_path / "good.pth"
    torch.save({"state_dict": state}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated.pth"):
        import_checkpoint(truncated, tmp_path / "t.keras")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(ValueError, match="not a"):
        read_torch_checkpoint(tmp_path / "text.pth")


@pytest.mark.slow
def test_an_imported_model_evaluates_exports_explains_and_fine_tunes(tiny_city, tmp_path):
    from sare_tf import cli

    path = tmp_path / "netvlad.pth.tar"
    _save(_torch_model(True, True, seed=6), path, legacy=True)
    imported = tmp_path / "imported.keras"
    assert cli.main(["import", str(path), "--out", str(imported), "--image-size", "48", "64"]) == 0
    assert cli.main(["evaluate", "--model", str(imported), "--dataset", tiny_city["test"],
                     "--out", str(tmp_path / "eval"), "--quiet"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["models"]["imported"]["image_size"] == [48, 64]
    assert cli.main(["export", "--model", str(imported), "--name", "imported",
                     "--root", str(tmp_path / "exports")]) == 0  # fmt: skip
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "x = tf.constant(np.load(sys.argv[2]))\n"
        "print(np.abs(m.signatures['serving_default'](image=x)['descriptor'].numpy() - np.load(sys.argv[3])).max())\n"
    )
    import keras

    batch = images(2, seed=7).astype(np.float32)
    np.save(tmp_path / "x.npy", batch)
    np.save(
        tmp_path / "y.npy", keras.ops.convert_to_numpy(keras.saving.load_model(imported)(batch))
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "exports" / "imported" / "1"),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert float(completed.stdout.split()[-1]) < 1e-5
    assert cli.main(["saliency", "--model", str(imported), "--dataset", tiny_city["test"],
                     "--random", "1", "--out", str(tmp_path / "saliency")]) == 0  # fmt: skip
    pngs = [p for p in os.listdir(tmp_path / "saliency") if p.endswith(".png")]
    assert pngs and Image.open(tmp_path / "saliency" / pngs[0]).size[0] > 100
    summary_args = ["train", "--dataset", tiny_city["train"], "--initial-model", str(imported),
                    "--epochs", "1", "--steps-per-epoch", "2", "--num-negatives", "2",
                    "--num-candidates", "20", "--lr", "0.001", "--precision", "float32",
                    "--out", str(tmp_path / "finetune"), "--quiet", "--no-tensorboard"]  # fmt: skip
    assert cli.main(summary_args) == 0
    summary = json.loads((tmp_path / "finetune" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["model"]["pca_dim"] == PCA_DIM
    assert summary["config"]["image_size"] == [48, 64]
