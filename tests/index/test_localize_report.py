"""The localize report as a person sees it: opened in headless Chromium at phone, laptop and
desktop widths, every match labelled, nothing wider than the window, a plot without network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from sare_tf.index.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = (390, 1024, 1600)

MEASURE = """
<script>
window.addEventListener('load', function () { setTimeout(function () {
  var figures = Array.from(document.querySelectorAll('figure.match'));
  var result = {
    width: window.innerWidth,
    scroll_width: document.documentElement.scrollWidth,
    matches: figures.length,
    visible: figures.filter(function (f) { var b = f.getBoundingClientRect();
      return b.width >= 60 && b.height >= 60; }).length,
    labelled: figures.filter(function (f) { return /#\\d+/.test(f.textContent); }).length,
    thumbnails: figures.filter(function (f) { return f.querySelector('img').naturalWidth > 0; }).length,
    plots: Array.from(document.querySelectorAll('img.plot')).map(function (i) { return i.naturalWidth; }),
    online: document.body.classList.contains('online'),
    maps_shown: Array.from(document.querySelectorAll('.map')).filter(function (m) {
      return m.getBoundingClientRect().height > 0; }).length,
    map_labels: Array.from(document.querySelectorAll('.map .leaflet-marker-icon')).map(function (m) {
      return m.textContent; }),
    tiles_loaded: Array.from(document.querySelectorAll('.map img.leaflet-tile')).filter(function (t) {
      return t.complete && t.naturalWidth > 0; }).length
  };
  var pre = document.createElement('pre'); pre.id = 'measure';
  pre.textContent = JSON.stringify(result); document.body.appendChild(pre);
}, 300); });
</script>
"""


LEAFLET_DIR = os.environ.get("SARE_TF_LEAFLET_DIR")  # leaflet's dist/ (CI fetches it from npm)


def _measure(page_path, width):
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},2400", "--virtual-time-budget=10000"]  # fmt: skip
    dom = subprocess.run(
        [*command, "--dump-dom", page_path.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    return json.loads(re.search(r'<pre id="measure">(.*?)</pre>', dom).group(1)), command


def _answers(tiny_city, count=2, k=10):
    """Answers of a real flat index of the tiny city's test split, with lat/lon and the truth."""
    import faiss
    import keras

    from sare_tf.artifacts import DescriptorModel
    from sare_tf.data import GeoDataset
    from sare_tf.data.geodesy import UtmFrame
    from sare_tf.encoding import encode
    from sare_tf.index.localize import judge
    from sare_tf.index.store import PlaceIndex
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(1)
    loaded = DescriptorModel(
        build_embedding_model("tiny", num_clusters=4), "tiny", None, "keras", (48, 64)
    )
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    db, _ = encode(loaded, test.db_image_paths(), progress=False)
    flat = faiss.IndexFlatIP(db.shape[1])
    flat.add(db)
    manifest = {"count": len(db), "frame": UtmFrame(17, True).as_dict()}
    index = PlaceIndex("in memory", manifest, flat, test.db_utm, test.db_image_paths())
    queries, _ = encode(loaded, test.query_image_paths()[:count], progress=False)
    answers = index.localize(queries, k=k)
    for answer, photo, truth in zip(
        answers, test.query_image_paths(), test.query_utm, strict=False
    ):
        answer.update(photo=photo, error=None)
        judge(answer, truth, 25.0, UtmFrame(17, True))
    return answers


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium_at_phone_laptop_and_desktop_widths(tiny_city, tmp_path):
    answers = _answers(tiny_city)
    answers.append({"photo": "/photos/missing.jpg", "error": "/photos/missing.jpg: no such file"})
    report = write_report(answers, tmp_path / "report.html")
    page = open(report).read()
    assert "leaflet" in page and page.count("class='map'") == 2  # lat/lon known: a map per photo
    instrumented = tmp_path / "measured.html"
    instrumented.write_text(page.replace("</body>", MEASURE + "</body>"))
    shots = os.environ.get("SARE_TF_SCREENSHOTS", str(tmp_path))
    for width in WIDTHS:
        common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--window-size={width},2400", "--virtual-time-budget=10000"]  # fmt: skip
        dom = subprocess.run(
            [*common, "--dump-dom", instrumented.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        measured = json.loads(re.search(r'<pre id="measure">(.*?)</pre>', dom).group(1))
        assert measured["scroll_width"] <= measured["width"], measured  # no sideways scrolling
        assert measured["matches"] == 20 and measured["visible"] == 20, measured
        assert measured["labelled"] == 20 and measured["thumbnails"] == 20, measured
        assert len(measured["plots"]) == 2 and min(measured["plots"]) > 300, measured
        # Without network Leaflet cannot load: the map is left out, the plot stays.
        assert not measured["online"] and measured["maps_shown"] == 0, measured
        subprocess.run([*common, f"--screenshot={shots}/report-{width}.png", report],
                       capture_output=True, timeout=120)  # fmt: skip
        assert os.path.getsize(f"{shots}/report-{width}.png") > 10_000


def test_report_marks_every_match_and_the_truth(tiny_city, tmp_path):
    answers = _answers(tiny_city, count=1, k=12)
    page = open(write_report(answers, tmp_path / "r.html")).read()
    right = sum(m["correct"] for m in answers[0]["matches"])
    assert page.count("class='match right'") == right
    assert page.count("class='match wrong'") == 12 - right
    assert all(f"<b>#{rank}</b>" in page for rank in range(1, 13))
    assert ("class='right'" in page) == answers[0]["correct"]
    assert f"{answers[0]['position_latlon'][0]:.6f}" in page
    markers = json.loads(re.search(r"data-points='(.*?)'", page).group(1).replace("&quot;", '"'))
    assert [m[0] for m in markers["matches"]] == list(range(1, 13))
    np.testing.assert_allclose([m[1:3] for m in markers["matches"]],
                               [m["latlon"] for m in answers[0]["matches"]])  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(
    not (LEAFLET_DIR and os.path.isfile(os.path.join(LEAFLET_DIR, "leaflet.js"))),
    reason="SARE_TF_LEAFLET_DIR does not hold Leaflet's dist/ (CI fetches it from the npm registry)",
)
def test_report_online_shows_a_labelled_street_map(tiny_city, tmp_path):
    """'Online': Leaflet and map tiles served on loopback, as the CDN and OpenStreetMap would."""
    import http.server
    import threading

    from PIL import Image

    tile = tmp_path / "tile.png"
    Image.new("RGB", (256, 256), (200, 220, 200)).save(tile)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            name = path.split("?")[0].lstrip("/")
            return str(tile) if path.startswith("/tiles/") else os.path.join(LEAFLET_DIR, name)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        answers = _answers(tiny_city)
        report = write_report(answers, tmp_path / "report.html", leaflet_url=f"{base}/leaflet",
                              tile_url=base + "/tiles/{z}/{x}/{y}.png")  # fmt: skip
        instrumented = tmp_path / "measured.html"
        instrumented.write_text(open(report).read().replace("</body>", MEASURE + "</body>"))
        shots = os.environ.get("SARE_TF_SCREENSHOTS", str(tmp_path))
        for width in WIDTHS:
            measured, command = _measure(instrumented, width)
            assert measured["online"] and measured["maps_shown"] == 2, measured
            assert measured["scroll_width"] <= measured["width"], measured
            # Every match numbered on the map, and each photo's answer and truth marked.
            labels = measured["map_labels"]
            numbers = sorted(int(t) for t in labels if t.strip().isdigit())
            assert numbers == sorted(list(range(1, 11)) * 2), measured
            assert labels.count("\u2605") == 2 and labels.count("\u25b2") == 2, measured
            assert measured["tiles_loaded"] > 0, measured
            subprocess.run([*command, f"--screenshot={shots}/report-online-{width}.png", report],
                           capture_output=True, timeout=120)  # fmt: skip
    finally:
        server.shutdown()
