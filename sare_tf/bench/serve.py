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

from sare_tf.bench.common import add_json_argument, child_environment, report_header, write_report

HELP = "load test of sare-tf serve on loopback (latency, throughput, batching, server RSS)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="model to serve (default: a random tiny model at 96x128)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per client (default 200)"
    )
    parser.add_argument("--max-batch", type=int, default=16, help="server --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="server --batch-wait-ms")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="stop sending after this long"
    )
    add_json_argument(parser, "serve")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), MiB."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


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


def load_test(url: str, clients: int, requests: int, max_seconds: float) -> dict:
    """Runs the clients; returns latencies (s), error messages and the wall time."""
    bodies = [
        json.dumps(
            {"signature_name": "serve_jpeg", "instances": [{"image_bytes": {"b64": image}}]}
        ).encode()
        for image in _jpegs()
    ]
    latencies, errors = [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def client(number: int) -> None:
        for i in range(requests):
            if time.monotonic() > stop_at:
                return
            request = urllib.request.Request(
                url, data=bodies[(number + i) % len(bodies)],
                headers={"Content-Type": "application/json"}, method="POST",
            )  # fmt: skip
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    ok = answer.status == 200 and b"predictions" in answer.read()
                error = None if ok else "answer without predictions"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as failure:
                error = str(failure)
            with lock:
                latencies.append(time.perf_counter() - start)
                if error:
                    errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - started}


def run(args: argparse.Namespace) -> int:
    report = report_header("serve")
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or _tiny_model(scratch)
        port = free_port()
        extra = ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms)]
        process = start_server(model, "bench", port, extra, os.path.join(scratch, "server.log"))
        try:
            base = f"http://127.0.0.1:{port}/v1"
            load_test(f"{base}/models/bench:predict", 2, 5, 60)  # warm-up
            rss_before = rss_mib(process.pid)
            result = load_test(
                f"{base}/models/bench:predict", args.clients, args.requests, args.max_seconds
            )
            rss_after = rss_mib(process.pid)
            with urllib.request.urlopen(f"{base}/sare-tf/stats", timeout=10) as answer:
                stats = json.loads(answer.read())
        finally:
            stop_server(process)
    latencies = np.asarray(result["latencies"]) * 1000.0
    sent = len(latencies)
    summary = {
        "model": args.model or "random tiny NetVLAD(8) at 96x128",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "requests_sent": sent,
        "errors": len(result["errors"]),
        "error_examples": result["errors"][:5],
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if sent else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 2) if sent else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if sent else None,
        "throughput_rps": round(sent / result["seconds"], 2),
        "server_rss_mib_before": rss_before,
        "server_rss_mib_after": rss_after,
        "server_stats": stats,
        "mean_images_per_model_call": round(stats["images"] / max(stats["model_calls"], 1), 2),
    }
    print(
        f"{sent} requests from {args.clients} clients, {summary['errors']} errors; latency p50 "
        f"{summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms; "
        f"{summary['throughput_rps']} requests/s; {stats['model_calls']} model calls for "
        f"{stats['images']} images ({summary['mean_images_per_model_call']} per call, largest "
        f"{stats['largest_batch']}); server RSS {rss_before} -> {rss_after} MiB"
    )
    report.update(results=summary)
    write_report(args.json, report)
    return 0 if summary["errors"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    from sare_tf.bench.common import standalone_main

    return standalone_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
