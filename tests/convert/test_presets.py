"""`sare-tf import --preset NAME`: downloads from a real HTTP server on loopback, the sha256
checks (published and recorded), and nothing half-written when a download fails."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import threading

import pytest

torch = pytest.importorskip("torch")

from sare_tf.bench.torch_models import build_geolocalization_net  # noqa: E402
from sare_tf.cli import main  # noqa: E402
from sare_tf.convert.presets import download_preset, import_preset  # noqa: E402
from sare_tf.hashing import file_sha256  # noqa: E402
from sare_tf.registry import PRESETS, preset_spec  # noqa: E402

PRESET = "cosplace-resnet18-512"


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if not type(self).truncate:
            return super().do_GET()
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3])  # then the connection closes early
        self.close_connection = True


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"truncate": False})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "url": f"http://127.0.0.1:{httpd.server_port}", "handler": handler}
    httpd.shutdown()
    httpd.server_close()


def _publish(root, name=PRESET):
    """The release file (ResNet-18, 512-d, CosPlace's layout) on the server."""
    net = build_geolocalization_net(torch, 18, 512)
    path = root / preset_spec(name).file_name
    torch.save(net.state_dict(), path)
    return path


def _cache_is_clean(cache):
    return not [n for n in os.listdir(cache) if n.startswith(".download-") or n.endswith(".tmp")]


def test_preset_downloads_checks_records_and_reuses(server, tmp_path, capsys):
    published = _publish(server["root"])
    cache, out = tmp_path / "cache", tmp_path / "cosplace.keras"
    assert main(["import", "--preset", PRESET, "--out", str(out), "--cache-dir", str(cache),
                 "--mirror", server["url"], "--quiet"]) == 0  # fmt: skip
    assert "resnet18 + gem, 512-d" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "cosplace.keras.json").read_text())
    assert sidecar["preset"]["name"] == PRESET and sidecar["preset"]["licence"] == "MIT"
    assert sidecar["sha256"] == file_sha256(published)
    assert sidecar["model"]["image_size"] == [512, 512]  # the authors' training size
    recorded = json.loads((cache / "sha256.json").read_text())
    assert recorded == {published.name: file_sha256(published)}
    assert _cache_is_clean(cache)
    # Cached: works with the server's file gone.
    published.unlink()
    assert (
        import_preset(PRESET, tmp_path / "again.keras", cache, server["url"])["sha256"]
        == recorded[published.name]
    )
    # A cached file that changed since its first download is refused.
    with open(cache / published.name, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match="not the first download's"):
        download_preset(PRESET, cache)


def test_a_wrong_published_hash_is_refused_and_nothing_is_left(server, tmp_path):
    _publish(server["root"])
    cache = tmp_path / "cache"
    wrong = dataclasses.replace(PRESETS[PRESET], sha256="0" * 64)
    with pytest.raises(ValueError, match="not the authors' published"):
        download_preset(wrong, cache, server["url"])
    assert os.listdir(cache) == []  # no file, no staging folder, no recorded hash


def test_an_interrupted_download_leaves_nothing(server, tmp_path):
    _publish(server["root"])
    server["handler"].truncate = True
    cache = tmp_path / "cache"
    with pytest.raises(Exception, match="127.0.0.1"):
        download_preset(PRESET, cache, server["url"])
    assert os.listdir(cache) == []
    with pytest.raises(SystemExit):  # an unknown preset fails in argparse, before any download
        main(["import", "--preset", "cosplace-resnet19-512"])
