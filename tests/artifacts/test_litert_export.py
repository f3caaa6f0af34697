"""LiteRT exports (float, dynamic-range, backbone int8) run by LiteRT's interpreter against Keras."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from sare_tf.artifacts import load_descriptor_model, model_fingerprint
from sare_tf.cli import main
from sare_tf.encoding import encode

# One pytest-xdist worker runs this module, so its module fixture (a model exported in every LiteRT mode)
# is built once.
pytestmark = pytest.mark.xdist_group("litert-exports")


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def exports(tiny_model, tiny_city, tmp_path_factory):
    """The tiny model saved as .keras and exported as LiteRT versions 1 (none), 2 (dynamic), 3 (int8)."""
    from sare_tf.artifacts import store_image_size

    folder = tmp_path_factory.mktemp("litert")
    store_image_size(tiny_model, (48, 64))
    keras_path = folder / "tiny.keras"
    tiny_model.save(keras_path)
    root = folder / "litert"
    base = ["export", "--model", str(keras_path), "--name", "tiny", "--root", str(root),
            "--format", "litert"]  # fmt: skip
    assert main(base) == 0
    assert main([*base, "--quantize", "dynamic"]) == 0
    assert main([*base, "--quantize", "int8", "--calibration", tiny_city["train"],
                 "--calibration-count", "16"]) == 0  # fmt: skip
    return {"keras": keras_path, "root": root, "base": base}


def test_every_mode_round_trips_within_its_tolerance(exports, tiny_city):
    from sare_tf.data import GeoDataset

    root = exports["root"]
    assert sorted(os.listdir(root / "tiny")) == ["1", "2", "3"]  # versioned, nothing left staged
    infos = [json.loads((root / "tiny" / v / "export_info.json").read_text()) for v in "123"]
    assert [i["quantize"] for i in infos] == ["none", "dynamic", "int8"]
    assert all(i["format"] == "litert" and i["image_size"] == [48, 64] for i in infos)
    assert infos[2]["calibration"] == {"images": 16, "seed": 0, "method": "minmax"}
    assert infos[2]["quantized_nodes"] > 0 and infos[2]["float_nodes"] > 0

    paths = GeoDataset.load(tiny_city["test"]).query_image_paths()
    reference, _ = encode(load_descriptor_model(exports["keras"]), paths, progress=False)
    loaded = [load_descriptor_model(root / "tiny" / v) for v in "123"]
    assert [m.kind for m in loaded] == ["litert"] * 3
    assert [m.precision for m in loaded] == [
        "float32 (litert)",
        "dynamic (litert)",
        "int8 (litert)",
    ]
    got = [encode(m, paths, progress=False)[0] for m in loaded]
    assert _cosines(got[0], reference).min() >= 0.99999  # float
    assert _cosines(got[1], reference).min() >= 0.999  # the stated dynamic-range tolerance
    assert _cosines(got[2], reference).min() >= 0.98  # the stated int8 tolerance (tiny model)
    keras_fingerprint = model_fingerprint(load_descriptor_model(exports["keras"]))
    assert [model_fingerprint(m) for m in loaded] == [
        keras_fingerprint, f"{keras_fingerprint}:dynamic", f"{keras_fingerprint}:int8"
    ]  # fmt: skip
    assert load_descriptor_model(root / "tiny").path == str(root / "tiny" / "3")  # the newest


def test_int8_keeps_the_preprocessing_and_descriptor_head_in_float32(exports):
    from ai_edge_litert.interpreter import Interpreter

    from sare_tf.artifacts.runtime_export import in_float_scope

    interpreter = Interpreter(model_path=str(exports["root"] / "tiny" / "3" / "model.tflite"))
    tensors = interpreter.get_tensor_details()
    backbone_int8 = [t for t in tensors if t["dtype"] == np.int8 and "block" in t["name"]]
    head = [
        t
        for t in tensors
        if ("/netvlad_" in t["name"] or "/preprocess_" in t["name"])
        and "tfl.quantize" not in t["name"]
    ]  # NetVLAD and the pixel preprocessing (VGG16's int8 RGB->BGR flip is wrong in TFLite)
    assert backbone_int8, "no backbone tensor is int8"
    assert head and all(t["dtype"] in (np.float32, np.int32) for t in head), [
        (t["name"], t["dtype"]) for t in head if t["dtype"] not in (np.float32, np.int32)
    ]
    # Group normalisation's statistics stay float too (`backbone_layer_names`); the int32
    # tensors of its scope are shapes.
    statistics = [
        t
        for t in tensors
        if "_norm" in t["name"] and "/moments/" in t["name"] and t["dtype"] != np.int32
    ]
    assert statistics and all(t["dtype"] == np.float32 for t in statistics), [
        (t["name"], t["dtype"]) for t in statistics if t["dtype"] != np.float32
    ]
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert in_float_scope("m_1/netvlad_1/Rsqrt;m_1/netvlad_1/Sum") and not in_float_scope(
        "m_1/block1_conv1_1/Relu"
    )


def test_full_int8_is_not_offered_and_the_layer_report_shows_why(tiny_city):
    """The int8 mode quantizes the backbone only: quantizing the head too (TFLite's full int8) is
    the wrong-descriptor mode; the quantization debugger's report puts the error in NetVLAD.
    (On the plain VGG-style network, as on VGG16: the statistics of `tiny`'s group
    normalisation quantize about as badly, and the shipped mode keeps them float too.)"""
    import keras

    from sare_tf.artifacts.litert_format import QUANTIZATIONS
    from sare_tf.artifacts.runtime_export import calibration_images
    from sare_tf.data import GeoDataset
    from sare_tf.evaluation.quantization import int8_layer_report
    from sare_tf.models import build_embedding_model

    assert QUANTIZATIONS == ("none", "dynamic", "int8")
    keras.utils.set_random_seed(0)
    model = build_embedding_model("tiny-plain", num_clusters=64)
    paths = GeoDataset.load(tiny_city["train"]).db_image_paths()[:24]
    report = int8_layer_report(model, (48, 64), lambda: calibration_images(paths, (48, 64)))
    assert report["cosine"]["backbone_int8"] >= 0.9999 > report["cosine"]["full_int8"]
    worst = report["layers"][0]  # sorted by error in quantization steps
    assert "/netvlad_" in worst["tensor_name"], worst


def test_wrong_inputs_and_modes_are_clear_errors(exports, capsys):
    model = load_descriptor_model(exports["root"] / "tiny" / "1").model
    with pytest.raises(ValueError, match=r"shape \[batch, height, width, 3\]"):
        model(np.zeros((2, 48, 64), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        model(np.zeros((1, 48, 64, 3), np.int64))
    with pytest.raises(ValueError, match="exported for 48x64 images"):
        model(np.zeros((1, 32, 64, 3), np.float32))
    assert model(np.zeros((3, 48, 64, 3), np.uint8)).shape == (3, 512)  # any batch size
    assert main([*exports["base"], "--quantize", "int8"]) != 0
    assert "needs calibration images" in capsys.readouterr().err
    onnx_dynamic = [*exports["base"][:-1], "onnx", "--quantize", "dynamic"]
    assert main(onnx_dynamic) != 0
    assert "--format onnx has no dynamic quantization" in capsys.readouterr().err
    assert sorted(os.listdir(exports["root"] / "tiny")) == ["1", "2", "3"]


def test_evaluate_and_index_build_take_the_runtime_flag(exports, tiny_city, tmp_path, capsys):
    version = str(exports["root"] / "tiny" / "3")
    evaluate = ["evaluate", "--model", version, "--dataset", tiny_city["test"], "--quiet"]
    assert main([*evaluate, "--runtime", "litert", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["models"]["tiny/3"]["kind"] == "litert"
    capsys.readouterr()
    assert main([*evaluate, "--runtime", "onnx", "--out", str(tmp_path / "eval2")]) != 0
    assert "not onnx artefacts" in capsys.readouterr().err
    build = ["index", "build", "--model", version, "--dataset", tiny_city["test"], "--quiet"]
    assert main([*build, "--runtime", "tf", "--out", str(tmp_path / "refused")]) != 0
    assert "not tf artefacts" in capsys.readouterr().err
    assert main([*build, "--runtime", "litert", "--out", str(tmp_path / "index")]) == 0
    from sare_tf.index.store import PlaceIndex

    index = PlaceIndex.load(tmp_path / "index")
    assert index.count > 0
    assert index.manifest["model"]["fingerprint"].endswith(":int8")
