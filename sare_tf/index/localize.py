"""Localizing photos against a place index (the HTML report is `sare_tf.index.report`).

`localize_photos` is what `sare-tf localize` runs: load the index and its model (or a given model,
checked against the index's fingerprint), encode the photos with the shared encoder (EXIF
orientation applied, the model's image size), and ask `PlaceIndex.localize`.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from sare_tf.artifacts import check_runtime, load_descriptor_model
from sare_tf.data.images import BadImageError, read_rgb
from sare_tf.encoding import encode
from sare_tf.index.store import PlaceIndex

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

    try:
        with Image.open(path) as image:
            image.verify()
    except UnidentifiedImageError:
        return f"{path}: not an image file Pillow can read (JPEG, PNG, ...)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"{path}: a damaged image ({error})"
    return None


def _decode_problem(path: str) -> str:

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
    descriptors_out: dict | None = None,
) -> list[dict]:
    """Answers "where was this photo taken?" for each photo.

    The photos are checked first (files, folders and patterns expanded; headers read), so a
    wrong path fails in a second, before the model loads.

    Args:
        index_dir: a `PlaceIndex` folder, or the index already loaded.
        photos: image files, folders of images or glob patterns.
        model: the descriptor model (path); default the one the index records.
        k: matches per photo (at most the index's size).
        radius_m: consensus radius.
        batch_size: images per model call.
        runtime: refuse a model that is not this runtime's ("tf", "onnx", "litert").
        truth: `{photo path: [x, y]}` true positions (metres, the index's frame): answers then
            say whether they are right (`"correct"`, within `radius_m`) and by how much
            (`"error_m"`).
        descriptors_out: a dict filled with `{photo: descriptor [D]}` of the localized photos
            (to hand them on, e.g. to hloc).

    Returns:
        One dict per photo: `{"photo": path, "error": None, **PlaceIndex.localize(...)[i]}`, or
        `{"photo": path, "error": "why it could not be localized"}`.

    Raises:
        IndexMismatchError: `model` is not the index's model.
        ValueError: `k` is not in [1, index size].
    """

    index = index_dir if isinstance(index_dir, PlaceIndex) else PlaceIndex.load(index_dir)
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
        if descriptors_out is not None:
            descriptors_out.update(
                {p: d for p, d, ok in zip(readable, descriptors, valid, strict=True) if ok}
            )
        for photo, ok in zip(readable, valid, strict=True):
            answer = {"photo": photo, "error": None, **next(answers)} if ok else None
            results[photo] = answer or {"photo": photo, "error": _decode_problem(photo)}
            if answer is not None and truth is not None:
                judge(answer, truth.get(os.path.abspath(photo)), radius_m, index.frame)
    order = [f["photo"] for f in failures] + found
    return [results[photo] for photo in dict.fromkeys(order)]


def judge(answer: dict, true_position, radius_m: float, frame=None) -> None:
    """Marks an answer right or wrong against a true position (None: unknown), in place: the
    answer's `"correct"` / `"error_m"` (and `"true_latlon"` given the index's `frame`), and
    each match's `"correct"`."""
    if true_position is None or not answer.get("matches"):
        return
    truth = np.asarray(true_position, np.float64)
    answer["true_position"] = [float(v) for v in truth]
    if frame is not None:
        answer["true_latlon"] = [round(float(v), 7) for v in frame.to_latlon(truth[None])[0]]
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
