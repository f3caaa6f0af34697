"""`sare-tf serve` while things change: new versions and index generations under load, overload,
SIGTERM. Real server processes on loopback ports; every client loop is bounded in time."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn")

from sare_tf.artifacts import load_descriptor_model, store_image_size
from sare_tf.bench.serve import free_port, rss_mib, start_server, stop_server
from sare_tf.data import GeoDataset
from sare_tf.index.store import PlaceIndex

IMAGE_SIZE = (48, 64)
pytestmark = pytest.mark.slow


def _export(root, seed: int) -> str:
    import keras

    from sare_tf.export import export_versioned
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(seed)
    model = build_embedding_model("tiny", num_clusters=4)
    store_image_size(model, IMAGE_SIZE)
    return export_versioned(model, root, "tiny").saved_model_dir


def _jpeg(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((60, 80, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _request(url, payload=None, timeout=30.0):
    """`(status, body dict, headers)`; a refused connection is `(None, reason, {})`."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers
    except (urllib.error.URLError, ConnectionError) as error:
        return None, str(getattr(error, "reason", error)), {}


def _body(photo_bytes: bytes, **extra) -> dict:
    return {
        "signature_name": "serve_jpeg",
        "instances": [{"image_bytes": {"b64": base64.b64encode(photo_bytes).decode()}}],
        **extra,
    }


class Clients:
    """`count` threads sending `payload` to `url` without pause until `stop()`; each keeps its
    sequence of answers."""

    def __init__(self, url, payload, count=8, max_seconds=120.0):
        self.answers = [[] for _ in range(count)]
        self._stop = threading.Event()
        deadline = time.monotonic() + max_seconds

        def run(number):
            while not self._stop.is_set() and time.monotonic() < deadline:
                status, body, _ = _request(url, payload)
                self.answers[number].append((status, body))

        self.threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def stop(self):
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _wait_for(check, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _states(url, name):
    status, body, _ = _request(f"{url}/v1/models/{name}")
    assert status == 200, body
    return {
        int(e["version"]): (e["state"], e["status"]["error_message"])
        for e in body["model_version_status"]
    }


def _which(descriptor, references) -> int:
    """The version whose reference descriptor `descriptor` equals (-1: none)."""
    for version, reference in references.items():
        if np.allclose(descriptor, reference, atol=1e-5):
            return version
    return -1


def test_new_versions_switch_in_under_load_and_a_corrupt_one_is_reported(tmp_path):
    import tensorflow as tf

    root = tmp_path / "models"
    photo = _jpeg(0)

    def reference(folder):
        signature = tf.saved_model.load(folder).signatures["serve_jpeg"]
        return signature(image_bytes=tf.constant([photo]))["descriptor"].numpy()[0]

    references = {1: reference(_export(root, seed=3))}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(
        str(root / "tiny"), "tiny", port, ["--poll-seconds", "0.3"], tmp_path / "log"
    )
    try:
        clients = Clients(f"{url}/v1/models/tiny:predict", _body(photo))
        time.sleep(1.0)
        references[2] = reference(_export(root, seed=4))
        assert not np.allclose(references[1], references[2], atol=1e-3)
        _wait_for(lambda: _states(url, "tiny") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                  what="version 2 AVAILABLE and version 1 END")  # fmt: skip
        time.sleep(1.0)
        clients.stop()
        for answers in clients.answers:
            assert answers and all(status == 200 for status, _ in answers), answers[:3]
            versions = [_which(body["predictions"][0], references) for _, body in answers]
            assert -1 not in versions
            assert versions == sorted(versions)  # version 1's answers, then version 2's only
        assert any(
            2 in [_which(b["predictions"][0], references) for _, b in a] for a in clients.answers
        )
        transitions = _request(f"{url}/v1/sare-tf/status")[1]["models"]["tiny"]["transitions"]
        states = [(t["version"], t["state"]) for t in transitions]
        assert states.index((2, "AVAILABLE")) < states.index((1, "END"))
        assert states.index((2, "LOADING")) < states.index((2, "AVAILABLE"))

        # A corrupt version 3: reported, version 2 keeps serving.
        os.makedirs(root / "tiny" / "3")
        (root / "tiny" / "3" / "saved_model.pb").write_bytes(b"not a saved model")
        states = _wait_for(lambda: (s := _states(url, "tiny")).get(3, ("",))[0] == "END" and s,
                           what="version 3 reported")  # fmt: skip
        assert states[2] == ("AVAILABLE", "") and states[3][1]
        assert str(tmp_path) not in states[3][1]  # the server's paths are not disclosed
        status, body, _ = _request(f"{url}/v1/models/tiny:predict", _body(photo))
        assert status == 200 and _which(body["predictions"][0], references) == 2
    finally:
        stop_server(process)


def test_new_index_generations_switch_in_under_load_and_bad_ones_are_refused(tiny_city, tmp_path):
    base = os.path.dirname(_export(tmp_path / "models", seed=3))
    loaded = load_descriptor_model(base)
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    paths, utm = test.db_image_paths(), test.db_utm
    first = len(paths) // 2
    folder = tmp_path / "index"
    PlaceIndex.build(loaded, paths[:first], utm[:first], folder, progress=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--index", str(folder), "--poll-seconds", "0.3"]
    process = start_server(base, "tiny", port, extra, tmp_path / "log")
    photo = open(test.query_image_paths()[0], "rb").read()
    try:
        clients = Clients(f"{url}/v1/models/tiny-localize:predict", _body(photo, top_k=100))
        time.sleep(1.0)
        PlaceIndex.load(folder).add(loaded, paths[first:], utm[first:], progress=False)
        _wait_for(lambda: _states(url, "tiny-localize") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                  what="generation 2 AVAILABLE")  # fmt: skip
        time.sleep(1.0)
        clients.stop()
        for answers in clients.answers:
            assert answers and all(status == 200 for status, _ in answers), answers[:3]
            sizes = [len(body["predictions"][0]["matches"]) for _, body in answers]
            assert set(sizes) <= {first, min(100, len(paths))}
            assert sizes == sorted(sizes)  # generation 1's answers, then generation 2's only
        assert any(len(a[-1][1]["predictions"][0]["matches"]) > first for a in clients.answers)

        manifest = json.loads((folder / "manifest.json").read_text())
        # Generation 3 with a damaged faiss file: refused, generation 2 keeps answering.
        damaged = {
            **manifest,
            "generation": 3,
            "files": {**manifest["files"], "faiss": "g0003.faiss"},
        }
        (folder / "g0003.faiss").write_bytes(b"garbage")
        (folder / "manifest.json").write_text(json.dumps(damaged))
        states = _wait_for(lambda: (s := _states(url, "tiny-localize")).get(3, ("",))[0] == "END" and s,
                           what="generation 3 refused")  # fmt: skip
        assert states[2] == ("AVAILABLE", "") and "damaged" in states[3][1]
        # Generation 4 built by another model: refused by fingerprint.
        other = {
            **manifest,
            "generation": 4,
            "model": {**manifest["model"], "fingerprint": "sha256:" + "0" * 64},
        }
        (folder / "manifest.json").write_text(json.dumps(other))
        states = _wait_for(lambda: (s := _states(url, "tiny-localize")).get(4, ("",))[0] == "END" and s,
                           what="generation 4 refused")  # fmt: skip
        assert "no served version" in states[4][1] and states[2] == ("AVAILABLE", "")
        status, body, _ = _request(
            f"{url}/v1/models/tiny-localize:predict", _body(photo, top_k=100)
        )
        assert status == 200 and len(body["predictions"][0]["matches"]) == min(100, len(paths))
    finally:
        stop_server(process)


def test_overload_gets_503_with_retry_after_and_never_hangs(tmp_path):
    base = os.path.dirname(_export(tmp_path / "models", seed=3))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/tiny:predict"
    extra = ["--max-in-flight", "8", "--max-queued", "8", "--queue-timeout-ms", "200",
             "--batch-wait-ms", "50", "--poll-seconds", "0"]  # fmt: skip
    process = start_server(base, "tiny", port, extra, tmp_path / "log")
    payload = _body(_jpeg(1))
    results, lock = [], threading.Lock()
    start = threading.Barrier(64)

    def client():
        start.wait()
        for _ in range(5):
            began = time.monotonic()
            status, body, headers = _request(url, payload, timeout=30)
            with lock:
                results.append((status, body, headers, time.monotonic() - began))

    try:
        rss_before = rss_mib(process.pid)
        threads = [threading.Thread(target=client) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        rss_after = rss_mib(process.pid)
        statuses = [r[0] for r in results]
        assert len(results) == 320 and set(statuses) <= {200, 503}
        refused = [r for r in results if r[0] == 503]
        assert refused and statuses.count(200) >= 8
        assert all(
            r[2].get("Retry-After") == "1" and "retry later" in r[1]["error"] for r in refused
        )
        assert max(r[3] for r in results) < 10.0  # nobody hangs: at most 200 ms queued + work
        print(
            f"overload: {statuses.count(200)} answered, {len(refused)} refused; RSS {rss_before} -> {rss_after} MiB"
        )
        assert rss_after - rss_before < 100
        report = _request(f"http://127.0.0.1:{port}/v1/sare-tf/status")[1]["admission"]
        assert report["refused_queue_full"] + report["refused_timeout"] == len(refused)
        assert report["in_flight"] == 0 and report["queued"] == 0
        status, _, _ = _request(url, payload)
        assert status == 200  # still answering afterwards
    finally:
        stop_server(process)


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0(tmp_path):
    base = os.path.dirname(_export(tmp_path / "models", seed=3))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/tiny:predict"
    extra = ["--batch-wait-ms", "800", "--poll-seconds", "0"]  # requests wait 0.8 s for company
    process = start_server(base, "tiny", port, extra, tmp_path / "log")
    payload = _body(_jpeg(2))
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(_request(url, payload))) for _ in range(6)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        late = _request(url, payload, timeout=5)
        for thread in threads:
            thread.join(timeout=60)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            stop_server(process)
        process.log.close()
    assert [a[0] for a in answers] == [200] * 6  # in flight when SIGTERM came: all finished
    assert late[0] is None and "refused" in late[1].lower()  # new connections refused
