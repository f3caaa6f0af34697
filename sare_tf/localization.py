"""Localizing photos against a place index, and the HTML report that shows the answers.

`localize_photos` is what `sare-tf localize` runs: load the index and its model (or a given model,
checked against the index's fingerprint), encode the photos with the shared encoder (EXIF
orientation applied, the model's image size), and ask `PlaceIndex.localize`.
"""

from __future__ import annotations

import base64
import glob
import html
import io
import os

import numpy as np

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def collect_photos(inputs) -> tuple[list[str], list[dict]]:
    """Photo files from files, folders (their images, sorted, not recursive) and glob patterns.

    Returns:
        `(photos, failures)`: the files to localize, and `{"photo", "error"}` for each input
        that gives none (missing, a folder without images, a pattern matching nothing).
    """
    photos, failures = [], []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name)
                for name in os.listdir(item)
                if name.lower().endswith(PHOTO_EXTENSIONS)
                and os.path.isfile(os.path.join(item, name))
            )
            if not found:
                failures.append(
                    {
                        "photo": item,
                        "error": f"{item}: a folder without image files ({', '.join(PHOTO_EXTENSIONS)})",
                    }
                )
            photos += found
        elif os.path.isfile(item):
            photos.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                failures.append({"photo": item, "error": f"{item}: no file matches this pattern"})
            photos += found
        else:
            failures.append({"photo": item, "error": f"{item}: no such file"})
    return photos, failures


def photo_problem(path: str) -> str | None:
    """Why `path` cannot be localized (not an image, unreadable), or None; reads only the
    file's header, so a whole folder is checked before the model loads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except UnidentifiedImageError:
        return f"{path}: not an image file Pillow can read (JPEG, PNG, ...)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"{path}: a damaged image ({error})"
    return None


def _decode_problem(path: str) -> str:
    from sare_tf.data.images import BadImageError, read_rgb

    try:
        read_rgb(path)
    except BadImageError as error:
        return str(error)
    return f"{path}: could not be decoded"


def localize_photos(
    index_dir,
    photos,
    model=None,
    k: int = 10,
    radius_m: float = 25.0,
    batch_size: int = 16,
    runtime: str | None = None,
    truth: dict | None = None,
) -> list[dict]:
    """Answers "where was this photo taken?" for each photo.

    The photos are checked first (files, folders and patterns expanded; headers read), so a
    wrong path fails in a second, before the model loads.

    Args:
        index_dir: a `PlaceIndex` folder.
        photos: image files, folders of images or glob patterns.
        model: the descriptor model (path); default the one the index records.
        k: matches per photo (at most the index's size).
        radius_m: consensus radius.
        batch_size: images per model call.
        runtime: refuse a model that is not this runtime's ("tf", "onnx", "litert").
        truth: `{photo path: [x, y]}` true positions (metres, the index's frame): answers then
            say whether they are right (`"correct"`, within `radius_m`) and by how much
            (`"error_m"`).

    Returns:
        One dict per photo: `{"photo": path, "error": None, **PlaceIndex.localize(...)[i]}`, or
        `{"photo": path, "error": "why it could not be localized"}`.

    Raises:
        IndexMismatchError: `model` is not the index's model.
        ValueError: `k` is not in [1, index size].
    """
    from sare_tf.artifacts import check_runtime, load_descriptor_model
    from sare_tf.encoding import encode
    from sare_tf.place_index import PlaceIndex

    index = PlaceIndex.load(index_dir)
    if not 1 <= k <= index.count:
        raise ValueError(
            f"--top-k must be between 1 and the index's {index.count} images. Received: {k}"
        )
    found, failures = collect_photos(photos)
    problems = {photo: photo_problem(photo) for photo in found}
    readable = [photo for photo in found if problems[photo] is None]
    results = {f["photo"]: f for f in failures}
    results.update({p: {"photo": p, "error": why} for p, why in problems.items() if why})
    if readable:
        loaded = load_descriptor_model(model or index.model_path())
        check_runtime(runtime, loaded)
        index.check_model(loaded)
        descriptors, valid = encode(loaded, readable, batch_size=batch_size, progress=False)
        answers = iter(index.localize(descriptors[valid], k=k, radius_m=radius_m))
        for photo, ok in zip(readable, valid, strict=True):
            answer = {"photo": photo, "error": None, **next(answers)} if ok else None
            results[photo] = answer or {"photo": photo, "error": _decode_problem(photo)}
            if answer is not None and truth is not None:
                judge(answer, truth.get(os.path.abspath(photo)), radius_m)
    order = [f["photo"] for f in failures] + found
    return [results[photo] for photo in dict.fromkeys(order)]


def judge(answer: dict, true_position, radius_m: float) -> None:
    """Marks an answer right or wrong against a true position (None: unknown), in place: the
    answer's `"correct"` / `"error_m"`, and each match's `"correct"`."""
    if true_position is None or not answer.get("matches"):
        return
    truth = np.asarray(true_position, np.float64)
    answer["true_position"] = [float(v) for v in truth]
    answer["error_m"] = round(float(np.linalg.norm(np.asarray(answer["position"]) - truth)), 3)
    answer["correct"] = answer["error_m"] <= radius_m
    for match in answer["matches"]:
        match["correct"] = bool(np.linalg.norm(np.asarray(match["position"]) - truth) <= radius_m)


def query_truth(dataset) -> dict:
    """`{absolute query image path: [x, y]}` of a `GeoDataset` (for `localize --dataset`)."""
    return {
        os.path.abspath(path): position
        for path, position in zip(dataset.query_image_paths(), dataset.query_utm, strict=True)
    }


def _thumbnail(path: str, size: int = 160) -> str:
    """A data: URI of a small JPEG of the image (empty string when unreadable)."""
    from PIL import Image

    from sare_tf.data.images import BadImageError, read_rgb

    try:
        pixels = read_rgb(path, (size, size))
    except BadImageError:
        return ""
    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _map_svg(answer: dict, radius_m: float, size: int = 200) -> str:
    """An SVG map: matches by rank (darker = better), top-1 ringed, consensus as a cross."""
    points = np.array([m["position"] for m in answer["matches"]], np.float64)
    estimate = np.asarray(answer["position"], np.float64)
    everything = np.vstack([points, estimate[None]])
    low, high = everything.min(axis=0) - radius_m, everything.max(axis=0) + radius_m
    scale = (size - 20) / max(float(np.max(high - low)), 1e-9)

    def xy(p):
        return 10 + (p[0] - low[0]) * scale, size - 10 - (p[1] - low[1]) * scale

    shapes = []
    for rank, point in reversed(list(enumerate(points))):
        x, y = xy(point)
        shade = int(40 + 180 * rank / max(len(points) - 1, 1))
        shapes.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="rgb({shade},{shade},255)"/>')
    x, y = xy(points[0])
    shapes.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="black"/>')
    x, y = xy(estimate)
    shapes.append(
        f'<path d="M{x - 6:.1f},{y:.1f}H{x + 6:.1f}M{x:.1f},{y - 6:.1f}V{y + 6:.1f}" '
        'stroke="red" stroke-width="2"/>'
    )
    bar = radius_m * scale
    shapes.append(f'<path d="M10,{size - 4}h{bar:.1f}" stroke="gray" stroke-width="2"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'style="border:1px solid #ccc">{"".join(shapes)}</svg>'
    )


def write_report(answers: list[dict], path, radius_m: float = 25.0) -> str:
    """An HTML page: each photo beside its top matches and a map of their positions.

    Images are embedded as small JPEG thumbnails, so the page is one self-contained file.
    """
    path = os.fspath(path)
    rows = []
    for answer in answers:
        photo = html.escape(answer["photo"])
        if answer.get("error"):
            rows.append(f"<h2>{photo}</h2><p class='error'>{html.escape(answer['error'])}</p>")
            continue
        cells = [
            f'<figure><img src="{_thumbnail(answer["photo"])}"><figcaption>query</figcaption></figure>'
        ]
        for match in answer["matches"][:5]:
            caption = (
                f"#{match['rank']} d={match['distance']:.3f}<br>"
                f"({match['position'][0]:.1f}, {match['position'][1]:.1f})"
            )
            cells.append(
                f'<figure><img src="{_thumbnail(match["path"])}" title="{html.escape(match["path"])}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        estimate = answer["position"]
        rows.append(
            f"<h2>{photo}</h2><p>position ({estimate[0]:.1f}, {estimate[1]:.1f}), "
            f"{answer['consensus_size']} of {len(answer['matches'])} matches agree, confidence "
            f"{answer['confidence']:.2f}</p><div class='row'>{''.join(cells)}"
            f"{_map_svg(answer, radius_m)}</div>"
        )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sare-tf localize</title>"
        "<style>body{font-family:sans-serif}.row{display:flex;gap:8px;align-items:flex-start}"
        "figure{margin:0;font-size:12px;text-align:center}img{max-width:160px}"
        ".error{color:#b00}</style></head><body><h1>sare-tf localize</h1>"
        "<p>Map: blue dots are the matches (darker = better), the ringed one is the top match, "
        f"the red cross the consensus position; the grey bar is {radius_m:g} m.</p>"
        + "".join(rows)
        + "</body></html>"
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def confidence_report(
    answers: list[dict],
    true_positions,
    radius_m: float = 25.0,
    thresholds=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
) -> dict:
    """How well the confidence separates right from wrong answers.

    An answer is right when its consensus position lies within `radius_m` of the truth. For each
    threshold t, the answers with confidence >= t are "accepted": precision = right accepted /
    accepted, recall = right accepted / all right answers.

    Args:
        answers: `localize_photos` / `PlaceIndex.localize` results (errors count as wrong).
        true_positions: `[Q, 2]` true positions of the photos.
        radius_m: the correctness radius.
        thresholds: confidence thresholds to report.

    Returns:
        `{"accuracy": fraction right, "top1_accuracy": ..., "rows": [{"threshold", "accepted",
        "precision", "recall"}]}`.
    """
    truth = np.asarray(true_positions, np.float64).reshape(-1, 2)
    right, right_top1, confidence = [], [], []
    for answer, position in zip(answers, truth, strict=True):
        if answer.get("error") or not answer.get("matches"):
            right.append(False)
            right_top1.append(False)
            confidence.append(-1.0)
            continue
        right.append(np.linalg.norm(np.asarray(answer["position"]) - position) <= radius_m)
        right_top1.append(
            np.linalg.norm(np.asarray(answer["position_top1"]) - position) <= radius_m
        )
        confidence.append(answer["confidence"])
    right, confidence = np.asarray(right), np.asarray(confidence)
    rows = []
    for threshold in thresholds:
        accepted = confidence >= threshold
        rows.append(
            {
                "threshold": threshold,
                "accepted": float(accepted.mean()) if len(accepted) else 0.0,
                "precision": float(right[accepted].mean()) if accepted.any() else None,
                "recall": float(right[accepted].sum() / max(right.sum(), 1)),
            }
        )
    return {
        "num_queries": int(len(right)),
        "accuracy": float(right.mean()) if len(right) else 0.0,
        "top1_accuracy": float(np.mean(right_top1)) if len(right_top1) else 0.0,
        "rows": rows,
    }
