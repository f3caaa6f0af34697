"""Load test of `sare-tf serve`: concurrent clients on loopback, latency, throughput, batching, RSS.

Starts a real `sare-tf serve` process on a free 127.0.0.1 port (a small random model is made
when --model is not given), sends `--clients` concurrent streams of `--requests` serve_jpeg
requests each (bounded in count and in time: it stops by itself), and reports errors, p50 / p95 /
p99 latency, throughput, the server's resident memory before and after, and how many model
calls served the images (fewer calls than requests: concurrent requests were batched).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from sare_tf.bench.common import (
    add_json_argument,
    child_environment,
    process_status_kib,
    report_header,
    write_report,
)
from sare_tf.extras import MissingExtraError

HELP = "load test of sare-tf serve on loopback (latency, throughput, batching, server RSS)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="model to serve (default: a random tiny model at 96x128)"
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 8, 32],
        help="concurrent clients, one load test per value (default 1 8 32)",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per client (default 200)"
    )
    parser.add_argument(
        "--formats", nargs="+", default=["saved_model", "onnx_int8"],
        choices=("saved_model", "onnx_int8"),
        help="serve the SavedModel and / or its ONNX int8 export (needs the runtimes extra)",
    )  # fmt: skip
    parser.add_argument(
        "--invalid-share", type=float, default=0.0,
        help="share of requests with an invalid body (a soak test: they must get 4xx, the valid "
        "ones 200)",
    )  # fmt: skip
    parser.add_argument("--max-batch", type=int, default=16, help="server --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="server --batch-wait-ms")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="stop each load test after this long"
    )
    add_json_argument(parser, "serve")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), MiB."""
    kib = process_status_kib("VmRSS", pid)
    return None if kib is None else round(kib / 1024, 1)


def wait_until_ready(url: str, process, timeout: float = 180.0) -> None:
    """Polls `GET url` until it answers 200; raises if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChildProcessError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} was not ready after {timeout:.0f} s")


def start_server(model: str, name: str, port: int, extra=(), log_path=None):
    """`sare-tf serve` in a child process (its output to `log_path`), ready to take requests."""
    command = [
        sys.executable, "-m", "sare_tf", "serve", "--model", model, "--name", name,
        "--port", str(port), *extra,
    ]  # fmt: skip
    log = open(log_path or os.devnull, "w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=child_environment()
    )
    process.log = log
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v1/models/{name}", process)
    except BaseException:
        stop_server(process)
        raise
    return process


def stop_server(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.close()


def _tiny_model(folder: str) -> str:
    import keras

    from sare_tf.artifacts import store_image_size
    from sare_tf.export import export_versioned
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(0)
    model = build_embedding_model("tiny", num_clusters=8)
    store_image_size(model, (96, 128))
    return os.path.dirname(export_versioned(model, folder, "bench").saved_model_dir)


def _jpegs(count: int = 8) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        pixels = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


INVALID_BODIES = (
    b"{not json",
    b'{"signature_name": "serve_jpeg", "instances": [{"b64": "%%%"}]}',
    b'{"signature_name": "serve_jpeg", "instances": [{"b64": "aGVsbG8="}]}',
    b'{"signature_name": "nope", "instances": [1]}',
    b'{"instances": [{"image": [[1, 2]]}]}',
)


def _send(url: str, body: bytes, timeout: float = 60.0) -> int | str:
    """The HTTP status of one POST, or the connection error's text."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError) as failure:
        return str(failure)


def load_test(
    url: str, clients: int, requests: int, max_seconds: float, invalid_share: float = 0.0
) -> dict:
    """Runs `clients` threads of `requests` POSTs each (stopping after `max_seconds`).

    Returns:
        `latencies` (s) of valid requests answered 200, `failures` of valid requests (status or
        error text), `invalid` counts by status, and the wall `seconds`.
    """
    bodies = [
        json.dumps(
            {"signature_name": "serve_jpeg", "instances": [{"image_bytes": {"b64": image}}]}
        ).encode()
        for image in _jpegs()
    ]
    latencies, failures, invalid = [], [], {}
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def client(number: int) -> None:
        rng = np.random.default_rng(number)
        for i in range(requests):
            if time.monotonic() > stop_at:
                return
            is_invalid = rng.random() < invalid_share
            body = (
                INVALID_BODIES[i % len(INVALID_BODIES)]
                if is_invalid
                else bodies[(number + i) % len(bodies)]
            )
            start = time.perf_counter()
            status = _send(url, body)
            with lock:
                if is_invalid:
                    invalid[str(status)] = invalid.get(str(status), 0) + 1
                elif status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures.append(status)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "latencies": latencies,
        "failures": failures,
        "invalid": invalid,
        "seconds": time.perf_counter() - started,
    }


def in_process_rate(model_path: str, batch: int, seconds: float = 5.0) -> dict:
    """Images/s of the model called in this process on decoded batches of `batch` (the
    ceiling of what the server can reach), and with the server's decoding included."""
    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.serving.images import decode_images
    from sare_tf.serving.servables import describe_function

    loaded = load_descriptor_model(model_path)
    describe = describe_function(loaded)
    values = [{"b64": image} for image in _jpegs(batch)]
    images = decode_images("serve_jpeg", values, loaded.image_size)
    describe(images)  # warm-up

    def rate(step) -> float:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            step()
            count += batch
        return count / (time.perf_counter() - started)

    return {
        "model_images_per_s": round(rate(lambda: describe(images)), 2),
        "decode_and_model_images_per_s": round(
            rate(lambda: describe(decode_images("serve_jpeg", values, loaded.image_size))), 2
        ),
    }


def _summary(result: dict, clients: int) -> dict:
    latencies = np.asarray(result["latencies"]) * 1000.0
    answered = len(latencies)

    def percentile(q):
        return round(float(np.percentile(latencies, q)), 2) if answered else None

    server_errors = [f for f in result["failures"] if not (isinstance(f, int) and f < 500)]
    server_errors += [
        s for s, n in result["invalid"].items() for _ in range(n) if not s.startswith("4")
    ]
    return {
        "clients": clients,
        "answered": answered,
        "valid_failures": len(result["failures"]),
        "failure_examples": [str(f) for f in result["failures"][:5]],
        "server_errors": len(server_errors),
        "invalid_answers": result["invalid"],
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "images_per_s": round(answered / result["seconds"], 2),
    }


def _onnx_int8(saved_model_base: str, folder: str) -> str:
    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.artifacts.onnx_format import export_onnx

    if saved_model_base.endswith(".keras"):
        source = saved_model_base
    else:  # the .keras file sare-tf export writes beside each version
        versions = [int(v) for v in os.listdir(saved_model_base) if v.isdigit()]
        source = os.path.join(saved_model_base, f"{max(versions)}.keras")
    model = load_descriptor_model(source).model
    calibration = os.path.join(folder, "calibration")
    os.makedirs(calibration, exist_ok=True)
    paths = []
    for number, image in enumerate(_jpegs(8)):
        path = os.path.join(calibration, f"{number}.jpg")
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(image))
        paths.append(path)
    exported = export_onnx(
        model, os.path.join(folder, "onnx"), "bench", quantize="int8", calibration_paths=paths
    )
    return exported["path"]


def bench_format(model: str, label: str, args, scratch: str) -> dict:
    """In-process rate, then one load test per client count against a fresh server."""
    rates = in_process_rate(model, args.max_batch)
    port = free_port()
    extra = [
        "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms),
        "--max-in-flight", str(max(args.clients) * 2), "--max-queued", str(max(args.clients) * 2),
        "--poll-seconds", "0",
    ]  # fmt: skip
    process = start_server(model, "bench", port, extra, os.path.join(scratch, f"{label}.log"))
    url = f"http://127.0.0.1:{port}/v1/models/bench:predict"
    levels = []
    try:
        load_test(url, 2, 5, 60)  # warm-up
        rss_before = rss_mib(process.pid)
        for clients in args.clients:
            result = load_test(url, clients, args.requests, args.max_seconds, args.invalid_share)
            level = _summary(result, clients)
            level["ratio_to_in_process"] = round(
                level["images_per_s"] / rates["model_images_per_s"], 3
            )
            levels.append(level)
            print(
                f"  {label}, {clients:>3} clients: {level['answered']} answered, "
                f"{level['valid_failures']} valid failed, {level['server_errors']} server errors; "
                f"p50 {level['p50_ms']} ms, p99 {level['p99_ms']} ms; {level['images_per_s']} "
                f"img/s = {level['ratio_to_in_process']}x the in-process batched rate",
                flush=True,
            )
        rss_after = rss_mib(process.pid)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v1/sare-tf/status", timeout=10
        ) as answer:
            status = json.loads(answer.read())
    finally:
        stop_server(process)
    batcher = next(iter(status["models"]["bench"]["batchers"].values()))
    print(
        f"  {label}: in process {rates['model_images_per_s']} img/s (model on decoded batches of "
        f"{args.max_batch}), {rates['decode_and_model_images_per_s']} img/s with decoding; "
        f"server RSS {rss_before} -> {rss_after} MiB; {batcher['model_calls']} model calls for "
        f"{batcher['images']} images",
        flush=True,
    )
    return {
        "format": label, "model": model, **rates, "levels": levels,
        "server_rss_mib_before": rss_before, "server_rss_mib_after": rss_after,
        "server_status": status,
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    report = report_header("serve")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or _tiny_model(scratch)
        for label in args.formats:
            path = model
            if label == "onnx_int8":
                try:
                    path = _onnx_int8(model, scratch)
                except MissingExtraError as error:
                    print(f"  onnx_int8 skipped: the runtimes extra is missing ({error})")
                    continue
            results.append(bench_format(path, label, args, scratch))
    write_report(
        args.json,
        report,
        settings={
            "model": args.model or "random tiny NetVLAD(8) at 96x128",
            "requests_per_client": args.requests,
            "invalid_share": args.invalid_share,
            "max_batch": args.max_batch,
            "batch_wait_ms": args.batch_wait_ms,
        },
        results=results,
    )
    failed = sum(
        level["valid_failures"] + level["server_errors"] for r in results for level in r["levels"]
    )
    return 0 if failed == 0 else 1
