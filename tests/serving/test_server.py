"""`sare-tf serve` started for real on a free loopback port: TF Serving clients, localize, faults."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn")

from sare_tf.artifacts import load_descriptor_model, store_image_size
from sare_tf.bench.serve import free_port, start_server, stop_server
from sare_tf.data import GeoDataset
from sare_tf.index.store import PlaceIndex
from sare_tf.serving_client import build_predict_request, predict, predict_url

# One pytest-xdist worker runs this module, so its module fixture (an export, an index and a running server)
# is built once.
pytestmark = pytest.mark.xdist_group("served")

IMAGE_SIZE = (48, 64)


@pytest.fixture(scope="module")
def served(tiny_city, tmp_path_factory):
    """A tiny SavedModel and a place index of the test split, served with NAME-localize."""
    import keras

    from sare_tf.export import export_versioned
    from sare_tf.models import build_embedding_model

    root = tmp_path_factory.mktemp("serve")
    keras.utils.set_random_seed(3)
    model = build_embedding_model("tiny", num_clusters=4)
    store_image_size(model, IMAGE_SIZE)
    exported = export_versioned(model, root / "models", "tiny")
    base_path = str(root / "models" / "tiny")
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    index = PlaceIndex.build(
        load_descriptor_model(base_path), test.db_image_paths(), test.db_utm, root / "index",
        progress=False,
    )  # fmt: skip
    port = free_port()
    extra = ["--index", str(root / "index"), "--max-pixels", "200000", "--max-request-mb", "1",
             "--version-label", "stable=1"]  # fmt: skip
    process = start_server(base_path, "tiny", port, extra, root / "server.log")
    yield {
        "url": f"http://127.0.0.1:{port}",
        "saved_model": exported.saved_model_dir,
        "index": index,
        "test": test,
        "base_path": base_path,
        "process": process,
    }
    stop_server(process)


def _jpeg(seed: int, size=(60, 80)) -> bytes:
    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url, body: bytes, content_type="application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _in_process(saved_model_dir, jpegs):
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    out = loaded.signatures["serve_jpeg"](image_bytes=tf.constant(jpegs))["descriptor"]
    return out.numpy()


def test_rest_client_curl_and_columnar_requests_equal_the_savedmodel(served):
    jpegs = [_jpeg(seed) for seed in range(3)]
    expected = _in_process(served["saved_model"], jpegs)
    url = predict_url(served["url"], "tiny")
    np.testing.assert_allclose(predict(url, jpegs), expected, atol=1e-5)  # the project's client
    body = json.dumps(build_predict_request(jpegs, "serve_jpeg"))
    completed = subprocess.run(
        ["curl", "-s", "-X", "POST", url, "-d", body], capture_output=True, text=True, timeout=60
    )  # curl's default content type (form-urlencoded) is accepted too
    np.testing.assert_allclose(json.loads(completed.stdout)["predictions"], expected, atol=1e-5)
    # tensorflow-serving-api style: columnar "inputs", and bare b64 instances.
    columnar = {"signature_name": "serve_jpeg",
                "inputs": {"image_bytes": [{"b64": base64.b64encode(j).decode()} for j in jpegs]}}  # fmt: skip
    status, answer = _post(url, json.dumps(columnar).encode())
    assert status == 200
    np.testing.assert_allclose(answer["outputs"], expected, atol=1e-5)
    bare = {
        "signature_name": "serve_jpeg",
        "instances": [{"b64": base64.b64encode(jpegs[0]).decode()}],
    }
    status, answer = _post(url, json.dumps(bare).encode())
    np.testing.assert_allclose(answer["predictions"], expected[:1], atol=1e-5)
    # serving_default: pixels as sent.
    import tensorflow as tf

    pixels = np.asarray(Image.open(io.BytesIO(jpegs[0])).convert("RGB"), np.float32)
    status, answer = _post(url, json.dumps({"instances": [{"image": pixels.tolist()}]}).encode())
    reference = (
        tf.saved_model.load(served["saved_model"])
        .signatures["serving_default"](image=tf.constant(pixels[None]))["descriptor"]
        .numpy()
    )
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], reference, atol=1e-5)
    with urllib.request.urlopen(f"{served['url']}/v1/models/tiny", timeout=10) as status_answer:
        model_status = json.loads(status_answer.read())
    assert model_status["model_version_status"][0]["state"] == "AVAILABLE"


def test_localize_endpoint_agrees_with_sare_tf_localize(served):
    from sare_tf.index.localize import localize_photos

    photos = served["test"].query_image_paths()[:4]
    expected = localize_photos(served["index"].folder, photos, model=served["base_path"], k=5)
    instances = [
        {"image_bytes": {"b64": base64.b64encode(open(p, "rb").read()).decode()}} for p in photos
    ]
    status, answer = _post(
        f"{served['url']}/v1/models/tiny-localize:predict",
        json.dumps({"instances": instances, "top_k": 5}).encode(),
    )
    assert status == 200
    for got, want in zip(answer["predictions"], expected, strict=True):
        assert [m["db_id"] for m in got["matches"]] == [m["db_id"] for m in want["matches"]]
        np.testing.assert_allclose(got["position"], want["position"], atol=1e-6)
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("tiny:predict", b"{not json", 400, "not valid JSON"),
        ("tiny:predict", b'{"signature_name": "predict_images", "instances": [1]}', 400, "Unknown signature_name"),
        ("tiny:predict", b'{"signature_name": "serve_jpeg", "instances": [{"b64": "aGVsbG8="}]}', 400, "not an image"),
        ("tiny:predict", b'{"signature_name": "serve_jpeg", "instances": [{"b64": "%%%"}]}', 400, "invalid base64"),
        ("tiny:predict", b'{"signature_name": "serve_jpeg", "instances": [{"pixels": 1}]}', 400, "must hold the input 'image_bytes'"),
        ("tiny:predict", b'{"instances": [{"image": [[1, 2]]}]}', 400, "must be [H][W][3]"),
        ("tiny:predict", b'{"instances": []}', 400, "no instance"),
        ("nope:predict", b'{"instances": [1]}', 404, "nope"),
        ("tiny-localize:predict", b'{"instances": [{"b64": "aGVsbG8="}], "top_k": 0}', 400, "top_k"),
    ],
)  # fmt: skip
def test_bad_requests_get_4xx_naming_the_fault(served, path, body, status, message):
    code, answer = _post(f"{served['url']}/v1/models/{path}", body)
    assert code == status and message in answer["error"]


def test_truncated_huge_and_oversized_inputs_are_refused_and_serving_goes_on(served):
    url = f"{served['url']}/v1/models/tiny:predict"
    truncated = _jpeg(5)[:300]
    code, answer = _post(url, json.dumps(build_predict_request([truncated], "serve_jpeg")).encode())
    assert code == 400 and "instance 0" in answer["error"]
    huge = _jpeg(6, size=(500, 500))  # 250,000 pixels > --max-pixels 200000
    code, answer = _post(url, json.dumps(build_predict_request([huge], "serve_jpeg")).encode())
    assert code == 400 and "more than the limit of 200000" in answer["error"]
    big_body = json.dumps(build_predict_request([b"x" * 900_000], "serve_jpeg")).encode()
    code, answer = _post(url, big_body)
    assert code == 413 and "larger than" in answer["error"]
    assert served["process"].poll() is None  # still running
    np.testing.assert_allclose(
        predict(url, [_jpeg(7)]), _in_process(served["saved_model"], [_jpeg(7)]), atol=1e-5
    )


@pytest.mark.slow
def test_load_test_with_invalid_bodies_is_error_free_and_batches(tmp_path):
    from sare_tf import cli

    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--formats", "saved_model", "--clients", "1", "4",
            "--requests", "10", "--invalid-share", "0.3", "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    (result,) = json.loads(out.read_text())["results"]
    for level in result["levels"]:
        invalid = sum(level["invalid_answers"].values())
        assert level["answered"] + invalid == 10 * level["clients"]  # every request answered
        assert invalid > 0 and set(level["invalid_answers"]) == {"400"}
        assert level["server_errors"] == 0 and level["valid_failures"] == 0
        assert level["p99_ms"] >= level["p50_ms"] > 0
    assert result["model_images_per_s"] > 0 and result["levels"][1]["ratio_to_in_process"] > 0
    batcher = next(iter(result["server_status"]["models"]["bench"]["batchers"].values()))
    assert batcher["images"] >= result["levels"][1]["answered"]
    assert batcher["model_calls"] < batcher["images"]  # concurrent requests were batched


@pytest.mark.slow
def test_transformer_with_a_remote_predictor_answers_like_one_process(served, tmp_path):
    """KServe's split: this server decodes, batches and searches; the predictor runs the model."""
    port = free_port()
    predictor = f"{served['url']}/v1/models/tiny:predict"
    extra = ["--index", served["index"].folder, "--predictor-url", predictor]
    transformer = start_server(served["base_path"], "tiny", port, extra, tmp_path / "t.log")
    try:
        photos = served["test"].query_image_paths()[:3]
        instances = [{"b64": base64.b64encode(open(p, "rb").read()).decode()} for p in photos]
        body = json.dumps({"instances": instances, "top_k": 5}).encode()
        _, split = _post(f"http://127.0.0.1:{port}/v1/models/tiny-localize:predict", body)
        _, single = _post(f"{served['url']}/v1/models/tiny-localize:predict", body)
    finally:
        stop_server(transformer)
    for got, want in zip(split["predictions"], single["predictions"], strict=True):
        assert [m["db_id"] for m in got["matches"]] == [m["db_id"] for m in want["matches"]]
        np.testing.assert_allclose(got["position"], want["position"], atol=1e-6)


@pytest.mark.slow
def test_serve_runs_a_litert_export_and_localizes_with_the_float_index(served, tmp_path):
    """`serve --runtime litert`: the same descriptors as the SavedModel it came from, and the
    index built with the SavedModel accepts it (a float export keeps the weights fingerprint)."""
    pytest.importorskip("ai_edge_litert")
    from sare_tf.artifacts.litert_format import export_litert

    model = load_descriptor_model(served["saved_model"] + ".keras").model
    exported = export_litert(model, tmp_path / "litert", "tiny")
    port = free_port()
    extra = ["--runtime", "litert", "--index", served["index"].folder]
    process = start_server(exported["path"], "tiny", port, extra, tmp_path / "server.log")
    try:
        jpegs = [_jpeg(seed) for seed in range(3)]
        got = predict(predict_url(f"http://127.0.0.1:{port}", "tiny"), jpegs)
        np.testing.assert_allclose(got, _in_process(served["saved_model"], jpegs), atol=1e-5)
        photo = served["test"].query_image_paths()[0]
        body = {
            "instances": [
                {"image_bytes": {"b64": base64.b64encode(open(photo, "rb").read()).decode()}}
            ]
        }
        status, answer = _post(
            f"http://127.0.0.1:{port}/v1/models/tiny-localize:predict", json.dumps(body).encode()
        )
        assert status == 200 and answer["predictions"][0]["matches"]
    finally:
        stop_server(process)


def test_onnx_exports_describe_like_the_savedmodel_in_the_servers_batcher(served, tmp_path):
    pytest.importorskip("onnxruntime")
    from sare_tf.artifacts.onnx_format import export_onnx
    from sare_tf.serving.servables import describe_function

    model = load_descriptor_model(served["saved_model"] + ".keras").model
    exported = export_onnx(model, tmp_path / "onnx", "tiny")
    describe = describe_function(load_descriptor_model(exported["path"]))
    images = np.random.default_rng(0).uniform(0, 255, (3, *IMAGE_SIZE, 3)).astype(np.float32)
    reference = describe_function(load_descriptor_model(served["saved_model"]))(images)
    np.testing.assert_allclose(describe(images), reference, atol=1e-5)


def test_every_tf_serving_url_form_answers_as_tf_serving_does(served, tmp_path):
    """URL forms and bodies of TF Serving's REST API documentation (api_rest): status, metadata
    and predict by name, /versions/N and /labels/L; classify / regress refused; errors as
    {"error": ...}."""
    base = f"{served['url']}/v1/models"
    jpegs = [_jpeg(11)]
    expected = _in_process(served["saved_model"], jpegs)
    body = json.dumps(build_predict_request(jpegs, "serve_jpeg")).encode()
    for path in ("tiny:predict", "tiny/versions/1:predict", "tiny/labels/stable:predict"):
        status, answer = _post(f"{base}/{path}", body)
        assert status == 200, (path, answer)
        np.testing.assert_allclose(answer["predictions"], expected, atol=1e-5)
    for path in ("tiny", "tiny/versions/1", "tiny/labels/stable"):
        status, answer = _get(f"{base}/{path}")
        assert status == 200 and answer == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }  # fmt: skip
    status, metadata = _get(f"{base}/tiny/versions/1/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "serve_jpeg"}
    jpeg_def = signatures["serve_jpeg"]
    assert jpeg_def["method_name"] == "tensorflow/serving/predict"
    assert jpeg_def["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    dims = jpeg_def["outputs"]["descriptor"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", str(expected.shape[1])]
    assert _get(f"{base}/tiny/metadata")[1] == metadata
    refusals = [
        ("POST", "tiny:classify", 400, "predict signatures only"),
        ("POST", "tiny:regress", 400, "predict signatures only"),
        ("POST", "tiny/versions/7:predict", 404, "Specific(tiny, 7)"),
        ("POST", "tiny/labels/canary:predict", 404, "label: canary"),
        ("GET", "tiny/versions/7", 404, "Specific(tiny, 7)"),
        ("GET", "tiny:predict", 405, "POST"),
        ("POST", "tiny/metadata", 405, ":predict"),
        ("GET", "nope/metadata", 404, "nope"),
    ]
    for method, path, code, words in refusals:
        status, answer = (
            _get(f"{base}/{path}") if method == "GET" else _post(f"{base}/{path}", body)
        )
        assert status == code and words in answer["error"], (path, status, answer)
    # sare_tf's own client: a version through predict_url, and query-server's defaults find the
    # served model by itself.
    got = predict(predict_url(served["url"], "tiny", version=1), jpegs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpegs[0])
    out = tmp_path / "desc.npy"
    from sare_tf import cli

    argv = ["query-server", served["url"], str(photo), "--model-version", "1", "--output", str(out)]
    assert cli.main(argv) == 0
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_localize_answers_show_paths_relative_to_the_image_folder(served):
    photo = served["test"].query_image_paths()[0]
    body = {"instances": [{"b64": base64.b64encode(open(photo, "rb").read()).decode()}], "top_k": 3}
    status, answer = _post(
        f"{served['url']}/v1/models/tiny-localize:predict", json.dumps(body).encode()
    )
    assert status == 200
    index_paths = served["index"].paths
    for match in answer["predictions"][0]["matches"]:
        shown = match["path"]
        assert not shown.startswith("/") and index_paths[match["db_id"]].endswith("/" + shown)
    status_page = _get(f"{served['url']}/v1/sare-tf/status")[1]
    assert str(served["test"].db_image_paths()[0]).rsplit("/", 2)[0] not in json.dumps(status_page)
