"""ONNX export, float or int8, for ONNX Runtime: the same descriptor contract as the SavedModel.

One ONNX graph maps `image` (float32 `[N, H, W, 3]`, RGB 0-255) to `descriptor` (float32
`[N, D]`), pixel preprocessing, backbone, NetVLAD, PCA whitening and L2 included (converted from
the Keras model's traced function with tf2onnx). `quantize="int8"` applies ONNX Runtime's static
QDQ quantization, per channel, to the backbone's convolutions only: NetVLAD, the PCA whitening
and the normalisations stay float32 (cheap, and the sensitive part), calibrated on
`calibration_count` images of a dataset's database (a seeded subset, at the model's image size).

Exports are versioned and atomic like the SavedModel's: `<root>/<name>/<version>/model.onnx` with
`export_info.json` (format, quantization, calibration, image size, descriptor size, the source
model's weights fingerprint), staged in a temporary folder and renamed into place. The default
root is `onnx_models/`, apart from `saved_models/` whose versions TF Serving loads.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile

import numpy as np

from sare_tf.onnx_runtime import INFO_FILE, ONNX_FILE

QUANTIZATIONS = ("none", "int8")
FLOAT_SCOPES = ("netvlad", "pca_whitening", "descriptor", "preprocess")
OPSET = 17


def onnx_bytes(model, opset: int = OPSET) -> bytes:
    """The serialised ONNX graph of `image -> descriptor` for a Keras embedding model."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),)

    @tf.function(input_signature=spec, autograph=False)
    def describe(image):
        return {"descriptor": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(describe, input_signature=spec, opset=opset)
    return proto.SerializeToString()


class _CalibrationImages:
    """ONNX Runtime's CalibrationDataReader over image files (one image per call)."""

    def __init__(self, paths, image_size):
        from sare_tf.data.images import read_rgb, resize_image

        self._next = iter(paths)
        self._read, self._resize, self._size = read_rgb, resize_image, image_size

    def get_next(self):
        for path in self._next:
            try:
                image = self._read(path)
            except (OSError, ValueError):
                continue  # an unreadable calibration image is skipped
            resized = np.asarray(self._resize(image, self._size), np.float32)[None]
            return {"image": resized}
        return None


def _in_float_scope(node_name: str) -> bool:
    """Whether a converted node belongs to a layer kept in float32 (`<model>/<layer>_1/...`)."""
    parts = node_name.split("/")
    return any(p == scope or p.startswith(f"{scope}_") for p in parts for scope in FLOAT_SCOPES)


def quantize_int8(float_path: str, out_path: str, calibration_paths, image_size) -> dict:
    """Static QDQ int8 of the backbone convolutions; returns what was quantized."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(float_path).graph
    kept_float = [n.name for n in graph.node if _in_float_scope(n.name)]
    convolutions = [n.name for n in graph.node if n.op_type == "Conv" and n.name not in kept_float]
    quantize_static(
        float_path,
        out_path,
        _CalibrationImages(list(calibration_paths), image_size),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=kept_float,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {"quantized_convolutions": len(convolutions), "float_nodes": len(kept_float)}


def calibration_subset(paths, count: int, seed: int = 0) -> list[str]:
    """`count` of `paths`, a seeded random subset in path order."""
    paths = list(paths)
    if count >= len(paths):
        return paths
    chosen = np.sort(np.random.default_rng(seed).choice(len(paths), count, replace=False))
    return [paths[i] for i in chosen]


def export_onnx(
    model,
    root="onnx_models",
    name: str = "sare",
    version: int | None = None,
    image_size=None,
    quantize: str = "none",
    calibration_paths=None,
    calibration_count: int = 200,
    seed: int = 0,
    source_model=None,
) -> dict:
    """Writes version `version` (default the next) of `<root>/<name>/` as ONNX (module docstring).

    Returns:
        The `export_info.json` contents, with `path` (the version folder).

    Raises:
        ValueError: an unknown quantization, int8 without calibration images, a bad name.
        FileExistsError: `version` exists (versions are never overwritten).
    """
    from sare_tf.descriptor_model import weights_fingerprint
    from sare_tf.export.signatures import resolve_image_size, serving_model
    from sare_tf.export.versioned import check_name, next_version

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}. Received: {quantize!r}")
    if quantize == "int8" and not calibration_paths:
        raise ValueError("int8 quantization needs calibration images (--calibration DATASET).")
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
    staging = tempfile.mkdtemp(prefix=".export-", dir=model_dir)
    try:
        float_path = os.path.join(staging, "float.onnx" if quantize == "int8" else ONNX_FILE)
        with open(float_path, "wb") as handle:
            handle.write(onnx_bytes(model))
        info = {
            "format": "onnx",
            "name": name,
            "version": chosen,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "quantize": quantize,
            "image_size": list(image_size),
            "descriptor_dim": int(model.outputs[0].shape[-1]),
            "weights_fingerprint": weights_fingerprint(model),
            "source_model": None if source_model is None else str(source_model),
            "input": "image: float32 [N, H, W, 3] RGB 0-255",
            "output": "descriptor: float32 [N, D]",
            "opset": OPSET,
        }
        if quantize == "int8":
            subset = calibration_subset(calibration_paths, calibration_count, seed)
            info["calibration"] = {"images": len(subset), "seed": seed, "method": "minmax"}
            info.update(
                quantize_int8(float_path, os.path.join(staging, ONNX_FILE), subset, image_size)
            )
            os.remove(float_path)
        with open(os.path.join(staging, INFO_FILE), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
        os.rename(staging, target)  # the commit point
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "path": target}
