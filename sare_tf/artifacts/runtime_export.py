"""What the ONNX and LiteRT exports share: versioned atomic folders, their info file, calibration.

An export for another runtime is one model file beside `export_info.json` in
`<root>/<name>/<version>/`, staged in a hidden `.export-*` folder of `<root>/<name>/` and renamed
into place (the commit point), so a failed export leaves no version behind and a version is never
overwritten. `export_info.json` holds the format, the quantization, the image size the graph was
built for, the descriptor size and the source model's weights fingerprint (so a place index built
with the source model is known to match a float export of it).

Calibration images (int8) are a seeded random subset of a dataset's database, read and resized
to the model's image size one at a time, and unreadable files are skipped.

The loading side is here too: `RuntimeExportFormat` (detect, load, describe, fingerprint),
`read_export_info` and `check_image_batch`, the check of an image batch before it reaches a
runtime.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile

import numpy as np

from sare_tf.artifacts.descriptor_model import DescriptorModel
from sare_tf.artifacts.signatures import resolve_image_size, serving_model
from sare_tf.artifacts.versions import check_name, locate_version, next_version, version_label
from sare_tf.data.images import read_rgb, resize_image
from sare_tf.hashing import arrays_fingerprint

# Layers kept in float32 by every quantized export: the descriptor head (cheap, and the part int8
# breaks: its normalisations span a range one int8 scale cannot hold) and the pixel preprocessing.
FLOAT_SCOPES = ("netvlad", "gem", "pca_whitening", "descriptor", "preprocess")
INFO_FILE = "export_info.json"


def in_float_scope(node_name: str) -> bool:
    """Whether a converted node belongs to a layer kept in float32 (`<model>/<layer>_1/...`).

    Converters join fused nodes' names with ';' and nest scopes with '/'.
    """
    segments = [s for part in node_name.split(";") for s in part.split("/")]
    return any(s == scope or s.startswith(f"{scope}_") for s in segments for scope in FLOAT_SCOPES)


def calibration_subset(paths, count: int, seed: int = 0) -> list[str]:
    """`count` of `paths`, a seeded random subset in path order."""
    paths = list(paths)
    if count >= len(paths):
        return paths
    chosen = np.sort(np.random.default_rng(seed).choice(len(paths), count, replace=False))
    return [paths[i] for i in chosen]


def calibration_images(paths, image_size):
    """Yields each readable image of `paths` as float32 `[1, H, W, 3]` RGB 0-255 at `image_size`."""
    for path in paths:
        try:
            image = read_rgb(path)
        except (OSError, ValueError):
            continue  # an unreadable calibration image is skipped
        yield np.asarray(resize_image(image, image_size), np.float32)[None]


def check_quantize(fmt: str, quantize: str, allowed, calibration_paths) -> None:
    if quantize not in allowed:
        raise ValueError(
            f"--format {fmt} supports --quantize {' | '.join(allowed)}. Received: {quantize!r}"
        )
    if quantize == "int8" and not calibration_paths:
        raise ValueError("int8 quantization needs calibration images (--calibration DATASET).")


def write_runtime_export(
    model,
    fmt: str,
    quantizations,
    write_model,
    root,
    name,
    version=None,
    image_size=None,
    quantize: str = "none",
    calibration_paths=None,
    calibration_count: int = 200,
    seed: int = 0,
    source_model=None,
) -> dict:
    """Checks, stages, describes and commits one version of a `fmt` export.

    `write_model(staging, model, image_size, calibration)` writes the model file(s) into the
    staging folder and returns extra info entries; `calibration` is the seeded subset of
    `calibration_count` of `calibration_paths` for int8 (None otherwise), recorded in the info.

    Returns:
        The `export_info.json` contents, with `path` (the version folder).

    Raises:
        ValueError: a quantization not in `quantizations`, int8 without calibration images, a
            bad name.
        FileExistsError: `version` exists (versions are never overwritten).
    """
    check_quantize(fmt, quantize, quantizations, calibration_paths)
    check_name(name)
    model = serving_model(model)
    image_size = resolve_image_size(model, image_size)
    model_dir = os.path.abspath(os.path.join(os.fspath(root), name))
    os.makedirs(model_dir, exist_ok=True)
    chosen = version if version is not None else next_version(root, name)
    target = os.path.join(model_dir, str(chosen))
    if os.path.exists(target):
        raise FileExistsError(
            f"Version {chosen} of {name!r} exists at {target}; never overwritten."
        )
    calibration = None
    if quantize == "int8":
        calibration = calibration_subset(calibration_paths, calibration_count, seed)
    staging = tempfile.mkdtemp(prefix=".export-", dir=model_dir)
    try:
        info = {
            "format": fmt,
            "name": name,
            "version": chosen,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "quantize": quantize,
            "image_size": list(image_size),
            "descriptor_dim": int(model.outputs[0].shape[-1]),
            "weights_fingerprint": arrays_fingerprint(w.numpy() for w in model.weights),
            "source_model": None if source_model is None else str(source_model),
            "input": "image: float32 [N, H, W, 3] RGB 0-255",
            "output": "descriptor: float32 [N, D]",
        }
        if calibration is not None:
            info["calibration"] = {"images": len(calibration), "seed": seed, "method": "minmax"}
        info.update(write_model(staging, model, image_size, calibration))
        with open(os.path.join(staging, INFO_FILE), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
        os.rename(staging, target)  # the commit point
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "path": target}


def read_export_info(folder: str) -> dict:
    """A version folder's `export_info.json` (a clear error when it is missing or broken)."""
    info_path = os.path.join(folder, INFO_FILE)
    try:
        with open(info_path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(
            f"{folder} has no {INFO_FILE}; export it with sare-tf export --format ..."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{info_path} is not valid JSON ({error}).") from None


def check_image_batch(images, runtime: str, image_size=None) -> np.ndarray:
    """`images` as float32 `[B, H, W, 3]`, or a ValueError saying what is wrong with them.

    `image_size` (height, width), when given, is the only size the runtime's graph accepts.
    """
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"The {runtime} model takes images of shape [batch, height, width, 3] (RGB 0-255). "
            f"Received: shape={array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating) and array.dtype != np.uint8:
        raise ValueError(f"Images must be float or uint8 RGB 0-255. Received: dtype={array.dtype}")
    if image_size is not None and tuple(array.shape[1:3]) != tuple(image_size):
        raise ValueError(
            f"The {runtime} model was exported for {image_size[0]}x{image_size[1]} images. "
            f"Received: {array.shape[1]}x{array.shape[2]} (resize first; sare-tf does)."
        )
    return array.astype(np.float32, copy=False)


class RuntimeExportFormat:
    """What the ONNX and LiteRT formats share: a model file beside `export_info.json` in a
    version folder, loaded by a runtime class `runtime(folder)` (a callable on image batches
    with `.info` and `.image_size`). Subclasses set `name`, `model_file`, `runtime`, `save`."""

    name: str
    model_file: str
    runtime: type

    @classmethod
    def detect(cls, path: str) -> str | None:
        return locate_version(path, cls.model_file)

    @classmethod
    def load(
        cls, folder: str, precision: str | None = None, safe_mode: bool = True
    ) -> DescriptorModel:
        if precision not in (None, "float32"):
            raise ValueError(
                f"A {cls.name} export runs as exported ({folder}); `precision` applies to .keras "
                f"models only. Received: precision={precision!r}"
            )
        runtime = cls.runtime(folder)
        quantized = runtime.info.get("quantize", "none")
        return DescriptorModel(
            runtime, version_label(folder), folder, cls.name, runtime.image_size,
            f"{'float32' if quantized == 'none' else quantized} ({cls.name})",
        )  # fmt: skip

    @staticmethod
    def describe(loaded: DescriptorModel) -> dict:
        return dict(loaded.model.info)

    @staticmethod
    def fingerprint(loaded: DescriptorModel) -> str:
        """The source model's weights hash; quantized descriptors differ from the float
        model's, so `:int8` / `:dynamic` marks them and an index of one refuses the other."""
        info = loaded.model.info
        quantized = info.get("quantize", "none")
        return info["weights_fingerprint"] + ("" if quantized == "none" else f":{quantized}")
