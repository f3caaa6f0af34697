"""The HTML page of `sare-tf localize --report`: each photo, every match, and where they are.

One self-contained file (images embedded as small JPEGs) that reads from phone to desktop width:
- per photo, the answer (position in metres and, where known, latitude / longitude; confidence;
  right or wrong when the truth is known) and every match as a labelled thumbnail (rank,
  distance, green / red border when the truth is known);
- a plot of the positions drawn with matplotlib (each match numbered by rank, the answer, the
  truth, the consensus radius; metres east / north of the answer), readable without network;
- where the positions have latitude / longitude and the browser is online, a Leaflet map with
  OpenStreetMap tiles and the same numbered markers above it (Leaflet is loaded from its CDN;
  offline the map is left out and the plot remains).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image

from sare_tf.data.images import BadImageError, read_rgb

LEAFLET_VERSION = "1.9.4"
LEAFLET_URL = f"https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist/leaflet"
TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
RIGHT, WRONG, UNKNOWN = "#1a8f3a", "#c62828", "#1f5fbf"

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:12px;max-width:1400px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;word-break:break-all;margin:0 0 4px}
.photo{border:1px solid #ddd;border-radius:8px;padding:12px;margin:16px 0}
.answer{margin:4px 0 12px} .right{color:#1a8f3a;font-weight:bold} .wrong{color:#c62828;font-weight:bold}
.body{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:16px}
@media (max-width:800px){.body{grid-template-columns:minmax(0,1fr)}}
.matches{display:grid;grid-template-columns:repeat(auto-fill,minmax(110px,1fr));gap:8px;align-content:start}
figure{margin:0;font-size:12px;text-align:center;border:3px solid transparent;border-radius:4px}
figure img{width:100%;height:auto;display:block}
figure.query{border-color:#444} figure.right{border-color:#1a8f3a} figure.wrong{border-color:#c62828}
.where img.plot{width:100%;height:auto;max-width:520px}
.map{width:100%;max-width:520px;aspect-ratio:1;display:none;margin-bottom:8px}
.online .map{display:block}
.error{color:#c62828}
.legend{font-size:13px;color:#555}
"""


def _thumbnail(path: str, size: int = 200) -> str:
    """A data: URI of a small JPEG of the image (empty string when unreadable)."""

    try:
        pixels = read_rgb(path)
    except BadImageError:
        return ""
    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(match: dict) -> str:
    return {True: RIGHT, False: WRONG}.get(match.get("correct"), UNKNOWN)


def position_plot(answer: dict, radius_m: float) -> str:
    """A data: URI of a PNG: every match numbered by rank at its position, the answer, the
    truth and the consensus radius, in metres east / north of the answer."""

    origin = np.asarray(answer["position"], np.float64)
    figure = Figure(figsize=(4.2, 4.2), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    axes.add_patch(Circle((0, 0), radius_m, fill=False, linestyle="--", color="#888"))
    points = [np.asarray(m["position"]) - origin for m in answer["matches"]]
    for match, (east, north) in reversed(list(zip(answer["matches"], points, strict=True))):
        axes.scatter(east, north, s=260, color=_colour(match), alpha=0.85, zorder=3)
        axes.annotate(str(match["rank"]), (east, north), ha="center", va="center",
                      color="white", fontsize=8, fontweight="bold", zorder=4)  # fmt: skip
    axes.scatter(0, 0, marker="*", s=320, color="black", zorder=5, label="answer")
    shown = [np.zeros(2), *points]
    if answer.get("true_position") is not None:
        truth = np.asarray(answer["true_position"]) - origin
        axes.scatter(
            *truth, marker="^", s=200, color="#f2b705", edgecolor="black", zorder=6, label="truth"
        )
        shown.append(truth)
    reach = max(radius_m * 1.5, float(np.abs(np.array(shown)).max()) * 1.15)
    axes.set_xlim(-reach, reach)
    axes.set_ylim(-reach, reach)
    axes.set_aspect("equal")
    axes.set_xlabel("metres east of the answer")
    axes.set_ylabel("metres north of the answer")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _describe_answer(answer: dict) -> str:
    east, north = answer["position"]
    where = f"position {east:.1f} E, {north:.1f} N (m)"
    if answer.get("position_latlon"):
        lat, lon = answer["position_latlon"]
        where += f" = {lat:.6f}, {lon:.6f}"
    text = (
        f"{where}; {answer['consensus_size']} of the 10 best matches agree with the best; confidence "
        f"{answer['confidence']:.2f}"
    )
    if answer.get("correct") is not None:
        verdict = "right" if answer["correct"] else "wrong"
        text += (
            f"; <span class='{verdict}'>{verdict}</span> ({answer['error_m']:.1f} m from the truth)"
        )
    return text


def _match_figure(match: dict) -> str:
    state = {True: " right", False: " wrong"}.get(match.get("correct"), "")
    latlon = ""
    if match.get("latlon"):
        latlon = f"<br>{match['latlon'][0]:.5f}, {match['latlon'][1]:.5f}"
    return (
        f"<figure class='match{state}'><img alt='match {match['rank']}' "
        f"src='{_thumbnail(match['path'])}' title='{html.escape(match['path'])}'>"
        f"<figcaption><b>#{match['rank']}</b> d={match['distance']:.3f}{latlon}</figcaption></figure>"
    )


def _section(number: int, answer: dict, radius_m: float) -> str:
    photo = html.escape(answer["photo"])
    if answer.get("error") or not answer.get("matches"):
        reason = html.escape(answer.get("error") or "no match")
        return f"<section class='photo'><h2>{photo}</h2><p class='error'>{reason}</p></section>"
    figures = [
        f"<figure class='query'><img alt='query' src='{_thumbnail(answer['photo'])}'>"
        "<figcaption><b>query</b></figcaption></figure>"
    ] + [_match_figure(match) for match in answer["matches"]]
    markers = ""
    if answer.get("position_latlon"):
        points = {
            "answer": answer["position_latlon"],
            "matches": [[m["rank"], *m["latlon"], _colour(m)] for m in answer["matches"]],
            "truth": answer.get("true_latlon"),
        }
        markers = f"<div class='map' id='map-{number}' data-points='{html.escape(json.dumps(points))}'></div>"
    return (
        f"<section class='photo'><h2>{photo}</h2><p class='answer'>{_describe_answer(answer)}</p>"
        f"<div class='body'><div class='matches'>{''.join(figures)}</div><div class='where'>"
        f"{markers}<img class='plot' alt='positions of the matches' "
        f"src='{position_plot(answer, radius_m)}'></div></div></section>"
    )


MAP_SCRIPT = """
<script>
function sareMaps(){
  if(!window.L){return;}
  document.body.classList.add('online');
  document.querySelectorAll('.map').forEach(function(el){
    var data=JSON.parse(el.dataset.points), map=L.map(el), bounds=[data.answer];
    L.tileLayer(document.body.dataset.tiles,{maxZoom:19,
      attribution:'&copy; OpenStreetMap contributors'}).addTo(map);
    data.matches.forEach(function(m){
      bounds.push([m[1],m[2]]);
      L.marker([m[1],m[2]],{icon:L.divIcon({className:'',iconSize:[22,22],
        html:'<div style="background:'+m[3]+';color:#fff;border-radius:11px;width:22px;'+
             'height:22px;text-align:center;font:bold 12px/22px sans-serif">'+m[0]+'</div>'})})
        .bindTooltip('match '+m[0]).addTo(map);
    });
    var symbol=function(text,colour){return L.divIcon({className:'',iconSize:[24,24],
      html:'<div style="color:'+colour+';font:bold 24px/24px sans-serif;text-align:center;'+
           'text-shadow:0 0 3px #fff">'+text+'</div>'});};
    L.marker(data.answer,{icon:symbol('\u2605','#000')}).bindTooltip('answer').addTo(map);
    if(data.truth){bounds.push(data.truth);
      L.marker(data.truth,{icon:symbol('\u25b2','#f2b705')}).bindTooltip('truth').addTo(map);}
    var fit=function(){map.invalidateSize();map.fitBounds(bounds,{padding:[24,24],maxZoom:19});};
    fit();
    window.addEventListener('resize',fit);
    window.addEventListener('load',fit);
  });
}
</script>
"""


def write_report(
    answers: list[dict], path, radius_m: float = 25.0, leaflet_url: str = LEAFLET_URL,
    tile_url: str = TILE_URL,
) -> str:  # fmt: skip
    """Writes the HTML page for `localize_photos` answers to `path`; returns the path.

    `leaflet_url` (without `.js` / `.css`) and `tile_url` say where Leaflet and the map tiles
    come from (Leaflet's CDN and OpenStreetMap by default; a local mirror works the same).
    """
    path = os.fspath(path)
    sections = [_section(number, answer, radius_m) for number, answer in enumerate(answers)]
    has_map = any(answer.get("position_latlon") for answer in answers)
    leaflet = (
        f"<link rel='stylesheet' href='{leaflet_url}.css'>{MAP_SCRIPT}"
        f"<script src='{leaflet_url}.js' onload='sareMaps()' async></script>"
        if has_map
        else ""
    )
    legend = (
        "Each match is numbered by rank in its thumbnail, on the plot and on the map; green: "
        f"within {radius_m:g} m of the truth, red: farther, blue: truth unknown. The star is the "
        "answer (the best match's place, refined by the matches within the dashed circle), the "
        "yellow triangle the true position."
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>sare-tf localize</title><style>{STYLE}</style>{leaflet}</head>"
        f"<body data-tiles='{html.escape(tile_url)}'>"
        f"<h1>sare-tf localize: {len(answers)} photos</h1><p class='legend'>{legend}</p>"
        + "".join(sections)
        + "</body></html>"
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path
