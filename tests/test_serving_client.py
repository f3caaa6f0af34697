"""The TF Serving REST client: exact request JSON, and networking against a loopback stand-in."""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from sare_tf import serving_client
from sare_tf.cli import main as cli_main


def test_request_matches_the_documented_binary_example():
    # TF Serving's REST API documentation ("Encoding binary values") encodes the bytes
    # b"image bytes" and b"awesome image bytes" as these base64 strings under a "b64" key.
    request = serving_client.build_predict_request(
        [b"image bytes", b"awesome image bytes"], "serve_jpeg"
    )
    documented = {
        "signature_name": "serve_jpeg",
        "instances": [
            {"image_bytes": {"b64": "aW1hZ2UgYnl0ZXM="}},
            {"image_bytes": {"b64": "YXdlc29tZSBpbWFnZSBieXRlcw=="}},
        ],
    }
    assert request == documented
    assert json.loads(json.dumps(request)) == documented  # survives JSON as is


def test_serving_default_request_holds_nested_pixel_lists():
    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    request = serving_client.build_predict_request([image], "serving_default")
    assert request == {
        "signature_name": "serving_default",
        "instances": [
            {
                "image": [
                    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                    [[9.0, 10.0, 11.0], [12.0, 13.0, 14.0], [15.0, 16.0, 17.0]],
                ]
            }
        ],
    }
    with pytest.raises(ValueError, match="one size"):
        serving_client.build_predict_request(
            [np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], "serving_default"
        )
    with pytest.raises(ValueError, match="bytes"):
        serving_client.build_predict_request([image], "serve_jpeg")
    with pytest.raises(ValueError, match="Unknown signature"):
        serving_client.build_predict_request([b"x"], "predict")


def test_predict_url():
    assert (
        serving_client.predict_url("http://localhost:8501", "sare_demo")
        == "http://localhost:8501/v1/models/sare_demo:predict"
    )
    assert (
        serving_client.predict_url("http://host:8501/", "m", version=3)
        == "http://host:8501/v1/models/m/versions/3:predict"
    )
    assert (
        serving_client.predict_url("http://host:8501/v1/models/other", "ignored")
        == "http://host:8501/v1/models/other:predict"
    )
    with pytest.raises(ValueError, match="http"):
        serving_client.predict_url("localhost:8501", "m")


def test_parse_predictions_row_object_and_column_formats():
    rows = [[1.0, 0.0], [0.0, 1.0]]
    expected = np.array(rows, dtype=np.float32)
    for response in (
        {"predictions": rows},
        {"predictions": [{"descriptor": row} for row in rows]},
        {"outputs": rows},
        {"outputs": {"descriptor": rows}},
    ):
        np.testing.assert_array_equal(serving_client.parse_predictions(response), expected)
    with pytest.raises(ValueError, match="no 'predictions'"):
        serving_client.parse_predictions({"error": "boom"})


def test_nearest_database_images_matches_a_loop():
    rng = np.random.default_rng(0)
    xq, xb = rng.normal(size=(3, 5)), rng.normal(size=(7, 5))
    distances, indices = serving_client.nearest_database_images(xq, xb, k=4)
    for q in range(3):
        loop = [sum((xq[q, d] - xb[i, d]) ** 2 for d in range(5)) for i in range(7)]
        order = sorted(range(7), key=lambda i: loop[i])[:4]
        assert indices[q].tolist() == order
        np.testing.assert_allclose(distances[q], [loop[i] for i in order], rtol=1e-6)


class _StandInServer:
    """A TF Serving stand-in on 127.0.0.1 that answers at most `max_requests` POSTs.

    It checks nothing itself: it records each request and answers with `respond(path, body)
    -> (status, json)`. Bounded: every wait for a request times out after 10 s, and the thread
    ends after `max_requests` requests or timeouts.
    """

    def __init__(self, respond, max_requests=1):
        self.requests = []
        self.respond = respond
        self.max_requests = max_requests
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, answer = outer.respond(self.path, json.loads(body))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 10
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        for _ in range(self.max_requests):
            self.server.handle_request()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=30)
        self.server.server_close()


def _colour_descriptor(contents: bytes) -> list[float]:
    """What the stand-in 'model' returns: the unit-norm mean colour of the decoded image."""
    with Image.open(io.BytesIO(contents)) as image:
        mean = np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    return (mean / np.linalg.norm(mean)).tolist()


def _serve_jpeg_stand_in(path, body):
    if body.get("signature_name") != "serve_jpeg" or set(body) != {"signature_name", "instances"}:
        return 400, {"error": f"unexpected request keys {sorted(body)}"}
    rows = [
        _colour_descriptor(base64.b64decode(item["image_bytes"]["b64"]))
        for item in body["instances"]
    ]
    return 200, {"predictions": rows}


def _write_jpeg(path, colour):
    Image.fromarray(np.full((24, 32, 3), colour, dtype=np.uint8)).save(path, quality=95)
    return str(path)


def test_predict_posts_the_request_and_returns_descriptors(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    files = [_write_jpeg(tmp_path / f"{i}.jpg", c) for i, c in enumerate(colours)]
    images = [open(path, "rb").read() for path in files]
    with _StandInServer(_serve_jpeg_stand_in, max_requests=2) as server:
        url = serving_client.predict_url(server.url, "sare_demo")
        descriptors = serving_client.predict(url, images, "serve_jpeg", batch_size=2)
    # Two requests (2 + 1 images) to the documented predict path, as JSON.
    assert [r["path"] for r in server.requests] == ["/v1/models/sare_demo:predict"] * 2
    assert server.requests[0]["headers"]["Content-Type"] == "application/json"
    first = json.loads(server.requests[0]["body"])
    assert first == serving_client.build_predict_request(images[:2], "serve_jpeg")
    # The stand-in decoded the base64 JPEGs back to their colours, in order.
    expected = np.array(colours, dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(descriptors, expected, atol=0.02)
    assert descriptors.dtype == np.float32 and descriptors.shape == (3, 3)


def test_server_errors_and_unreachable_servers_give_clear_messages(tmp_path):
    def refuse(path, body):
        return 400, {"error": "image_bytes[0] (5 bytes) is not a JPEG, PNG, GIF or BMP image"}

    with _StandInServer(refuse) as server:
        url = serving_client.predict_url(server.url, "m")
        with pytest.raises(
            ValueError, match=r"HTTP 400: image_bytes\[0\] \(5 bytes\) is not a JPEG"
        ):
            serving_client.predict(url, [b"hello"])
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match="Could not reach TF Serving"):
        serving_client.predict(f"http://127.0.0.1:{port}/v1/models/m:predict", [b"x"], timeout=5)


def test_query_server_command_prints_nearest_database_images(tmp_path, capsys):
    red = _write_jpeg(tmp_path / "red.jpg", (220, 20, 20))
    blue = _write_jpeg(tmp_path / "blue.jpg", (20, 20, 220))
    db_names = ["db/green.jpg", "db/red.jpg", "db/blue.jpg", "db/orange.jpg"]
    db = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0.8, 0.6, 0]], dtype=np.float32)
    np.save(tmp_path / "db.npy", db)
    (tmp_path / "db.txt").write_text("\n".join(db_names) + "\n")
    argv = ["query-server", "http://127.0.0.1:1", red, blue, "--model-name", "city"]
    with _StandInServer(_serve_jpeg_stand_in, max_requests=2) as server:
        argv[1] = server.url
        assert cli_main(argv + ["--out", str(tmp_path / "q.npy")]) == 0
        printed = capsys.readouterr().out
        assert (
            cli_main(
                argv
                + ["--db-descriptors", str(tmp_path / "db.npy")]
                + ["--db-list", str(tmp_path / "db.txt"), "--top-k", "2"]
            )
            == 0
        )
    assert server.requests[0]["path"] == "/v1/models/city:predict"
    assert f"{red}\tdim=3\tnorm=1.0000" in printed
    saved = np.load(tmp_path / "q.npy")
    assert saved.shape == (2, 3)
    lines = capsys.readouterr().out.splitlines()
    # red is nearest db/red.jpg, then db/orange.jpg; blue is nearest db/blue.jpg.
    assert lines[0] == red and lines[1].split("\t")[1] == "db/red.jpg"
    assert lines[2].split("\t")[1] == "db/orange.jpg"
    assert lines[3] == blue and lines[4].split("\t")[1] == "db/blue.jpg"
    expected = float(np.sum((saved[0] - db[1]) ** 2))
    assert float(lines[1].split("\t")[2]) == pytest.approx(expected, abs=1e-4)


def test_query_server_command_checks_its_inputs(tmp_path, capsys):
    image = _write_jpeg(tmp_path / "a.jpg", (1, 2, 3))
    np.save(tmp_path / "db.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "db.txt").write_text("a\nb\n")
    base = ["query-server", "http://127.0.0.1:1", image]
    assert cli_main([*base, "--db-descriptors", str(tmp_path / "db.npy")]) == 2
    assert "go together" in capsys.readouterr().err
    db_args = ["--db-descriptors", str(tmp_path / "db.npy"), "--db-list", str(tmp_path / "db.txt")]
    assert cli_main([*base, *db_args]) == 2
    assert "must match row for row" in capsys.readouterr().err
    assert cli_main(["query-server", "http://127.0.0.1:1", str(tmp_path / "missing.jpg")]) == 2
    assert "Image not found" in capsys.readouterr().err


@pytest.mark.slow
def test_client_requests_run_on_an_exported_model(tmp_path):
    """A stand-in that feeds the JSON to an exported SavedModel the way TF Serving's row format
    maps it (input name -> tensor, {"b64": ...} -> bytes) answers what the Keras model computes."""
    import keras
    import tensorflow as tf

    from sare_tf.data.images import safe_load_image
    from sare_tf.export import export_saved_model
    from sare_tf.models import build_embedding_model

    model = build_embedding_model("tiny", num_clusters=2, input_shape=(32, 32, 3))
    export_saved_model(model, tmp_path / "sm")
    signatures = tf.saved_model.load(str(tmp_path / "sm")).signatures

    def run_signature(path, body):
        signature = signatures[body["signature_name"]]
        (name,) = signature.structured_input_signature[1]
        values = [item[name] for item in body["instances"]]
        if isinstance(values[0], dict):
            tensor = tf.constant([base64.b64decode(value["b64"]) for value in values])
        else:
            tensor = tf.constant(np.asarray(values, dtype=np.float32))
        return 200, {"predictions": signature(**{name: tensor})["descriptor"].numpy().tolist()}

    files = [
        _write_jpeg(tmp_path / f"{i}.jpg", c) for i, c in enumerate([(9, 80, 200), (250, 5, 0)])
    ]
    pixels = np.stack([safe_load_image(tf.constant(p), (32, 32))[0].numpy() for p in files])
    expected = keras.ops.convert_to_numpy(model(pixels))
    with _StandInServer(run_signature, max_requests=3) as server:
        url = serving_client.predict_url(server.url, "tiny")
        from_jpeg = serving_client.predict(url, [open(p, "rb").read() for p in files])
        from_pixels = serving_client.predict(url, list(pixels), "serving_default")
    np.testing.assert_allclose(from_jpeg, expected, atol=1e-5)  # JSON floats round-trip exactly
    np.testing.assert_allclose(from_pixels, expected, atol=1e-5)
    assert len(server.requests) == 3  # one serve_jpeg batch, one request per float image
