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

from sare_tf.convert import import_checkpoint  # noqa: E402
from sare_tf.convert.torch_checkpoint import UnsafeCheckpointError, read_torch_checkpoint  # noqa: E402

# vgg16.features[:-2] with tiny channel counts: (out channels, then "M" for a max-pool).
TINY_VGG = [4, 4, "M", 6, 6, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8]
NUM_CLUSTERS, PCA_DIM = 5, 12
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _torch_model(vladv2: bool, wpca: bool, seed: int):
    nn = torch.nn
    torch.manual_seed(seed)
    layers, channels = [], 3
    for item in TINY_VGG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    encoder = nn.Sequential(*layers[:-1])  # [:-2] of the full features: no last ReLU / pool
    assert len(encoder) == 29 and isinstance(encoder[28], nn.Conv2d)
    pool = nn.Module()
    pool.conv = nn.Conv2d(channels, NUM_CLUSTERS, kernel_size=(1, 1), bias=vladv2)
    pool.centroids = nn.Parameter(torch.rand(NUM_CLUSTERS, channels))
    model = nn.Module()
    model.add_module("encoder", encoder)
    model.add_module("pool", pool)
    if wpca:
        model.add_module("WPCA", nn.Sequential(nn.Conv2d(NUM_CLUSTERS * channels, PCA_DIM, 1)))
    with torch.no_grad():  # as after training: centres among the unit local descriptors,
        # sharp assignments, and conv layers that keep the images apart
        pool.centroids.copy_(
            torch.nn.functional.normalize(torch.randn(NUM_CLUSTERS, channels), dim=1) * 0.5
        )
        pool.conv.weight.copy_(20.0 * pool.centroids[:, :, None, None])
        for layer in encoder:
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(3.0)
    return model


def _save(model, path, legacy: bool):
    checkpoint = {"epoch": 7, "state_dict": model.state_dict(), "recalls": {1: 0.5, 5: 0.75},
                  "best_score": 0.75, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                  "parallel": False}  # fmt: skip
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return {
        key: value.detach().numpy().astype(np.float64) for key, value in model.state_dict().items()
    }


# --- the numpy reference, from the sources' definitions (NCHW) ----------------------------------


def _conv3x3(x, weight, bias):
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, weight) + bias[None, :, None, None]


def _maxpool(x):
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def reference_descriptors(state, images_rgb_0_255):
    x = (images_rgb_0_255 / 255.0 - MEAN) / STD
    x = x.transpose(0, 3, 1, 2)  # NCHW
    for position, kind in enumerate(_layout()):  # vgg16.features[:-2]: ends with conv5_3, no ReLU
        if kind == "pool":
            x = _maxpool(x)
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        else:
            x = _conv3x3(x, state[f"encoder.{position}.weight"], state[f"encoder.{position}.bias"])
    n, c = x.shape[:2]
    x = _normalize(x, axis=1)  # per location, across descriptor dims
    logits = np.einsum("kc,nchw->nkhw", state["pool.conv.weight"][:, :, 0, 0], x)
    if "pool.conv.bias" in state:
        logits += state["pool.conv.bias"][None, :, None, None]
    logits = logits.reshape(n, NUM_CLUSTERS, -1)
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    flat = x.reshape(n, c, -1)
    vlad = np.zeros((n, NUM_CLUSTERS, c))
    for k in range(NUM_CLUSTERS):  # the sources' loop over clusters
        residual = flat - state["pool.centroids"][k][None, :, None]
        vlad[:, k, :] = (residual * soft[:, k : k + 1, :]).sum(axis=-1)
    vlad = _normalize(_normalize(vlad, axis=2).reshape(n, -1), axis=1)
    if "WPCA.0.weight" in state:
        vlad = vlad @ state["WPCA.0.weight"][:, :, 0, 0].T + state["WPCA.0.bias"]
        vlad = _normalize(vlad, axis=-1)
    return vlad


def _layout():
    kinds = []
    for item in TINY_VGG:
        kinds += ["pool"] if item == "M" else ["conv", "relu"]
    return kinds[:-1]


def _images(count, seed, size=(48, 64)):
    rng = np.random.default_rng(seed)
    smooth = rng.random((count, size[0] // 8, size[1] // 8, 3))
    return np.clip(
        np.kron(smooth, np.ones((1, 8, 8, 1))) * 255 + rng.normal(0, 12, (count, *size, 3)), 0, 255
    )


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
    expected_dim = PCA_DIM if wpca else NUM_CLUSTERS * 8
    assert sidecar["model"]["descriptor_dim"] == expected_dim
    assert sidecar["model"]["pca_dim"] == (PCA_DIM if wpca else None)
    import hashlib

    assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = keras.saving.load_model(tmp_path / "imported.keras", compile=False)
    images = _images(6, seed=2)
    got = keras.ops.convert_to_numpy(model(images.astype(np.float32)))
    want = reference_descriptors(state, images)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine
    # ... and the images are told apart (the check is not met by near-identical descriptors).
    between = want @ want.T / np.outer(np.linalg.norm(want, axis=1), np.linalg.norm(want, axis=1))
    assert between[np.triu_indices(6, 1)].max() < 0.99
    np.testing.assert_allclose(got, want, atol=2e-4)
    # The same top-10 retrieval on a small set.
    database, queries = _images(12, seed=3), _images(3, seed=4)
    db_got = keras.ops.convert_to_numpy(model(database.astype(np.float32)))
    q_got = keras.ops.convert_to_numpy(model(queries.astype(np.float32)))
    db_want, q_want = reference_descriptors(state, database), reference_descriptors(state, queries)
    top_got = np.argsort(-(q_got @ db_got.T), axis=1)[:, :10]
    top_want = np.argsort(-(q_want @ db_want.T), axis=1)[:, :10]
    np.testing.assert_array_equal(top_got, top_want)


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

    images = _images(2, seed=7).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    np.save(
        tmp_path / "y.npy", keras.ops.convert_to_numpy(keras.saving.load_model(imported)(images))
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
