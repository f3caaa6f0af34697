"""`sare-tf export`: a trained model as a versioned SavedModel for TF Serving."""

from __future__ import annotations

import argparse

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.export.settings import ExportSettings

HELP = "export a trained model as a SavedModel for TF Serving (saved_models/NAME/VERSION/)"
DESCRIPTION = """\
Exports an embedding model (.keras) as saved_models/NAME/VERSION/, the layout TF Serving
loads (base path saved_models/NAME, integer version folders), with two signatures:
serving_default (float32 RGB images 0-255 -> descriptor) and serve_jpeg (encoded
JPEG/PNG bytes -> decoded, resized to the model's image size -> descriptor). A .keras copy
is written beside the version (NAME/VERSION.keras) and export_info.json inside it
(VERSION/assets.extra/). The export is staged in a temporary folder and renamed into place.
With --pca-dim D --pca-from DATASET, PCA whitening to D dims is fitted on the NetVLAD
descriptors of DATASET's database images and exported with the model."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of `ExportSettings`."""
    add_config_arguments(parser, ExportSettings)


def run(args: argparse.Namespace) -> int:
    import os

    import sare_tf.layers  # noqa: F401  (registers the custom layers for loading)
    from sare_tf.export import export_versioned, resolve_image_size, serving_model

    settings = config_from_args(ExportSettings, args)
    from sare_tf.artifacts import read_keras_model

    model = serving_model(read_keras_model(settings.model))
    image_size = resolve_image_size(model, settings.image_size)
    if settings.pca_dim is not None:
        from sare_tf.data import GeoDataset
        from sare_tf.export.pca import add_pca_whitening

        dataset = GeoDataset.load(settings.pca_from, image_root=settings.image_root)
        print(
            f"Fitting PCA whitening to {settings.pca_dim} dims on the database images of "
            f"{dataset.name} ({dataset.num_db} images, at most {settings.pca_max_images} used)."
        )
        model = add_pca_whitening(
            model,
            dataset.db_image_paths(),
            settings.pca_dim,
            image_size,
            max_images=settings.pca_max_images,
            batch_size=settings.batch_size,
        )
    if settings.format in ("onnx", "litert"):
        return _export_for_runtime(settings, model, image_size)
    result = export_versioned(
        model,
        root=settings.export_root,
        name=settings.name,
        version=settings.version,
        image_size=image_size,
        source_model=os.path.abspath(settings.model),
        keras_copy=settings.keras_copy,
    )
    print(
        f"Exported {settings.name} version {result.version}: {result.saved_model_dir}\n"
        f"  Keras copy: {result.keras_path}\n"
        f"  descriptor: {result.info['descriptor_dim']} dims; serve_jpeg resizes to "
        f"{image_size[0]}x{image_size[1]}\n"
        f"  serve it: docker run -p 8501:8501 -p 8500:8500 --mount type=bind,"
        f"source={os.path.dirname(result.saved_model_dir)},target=/models/{settings.name} "
        f"-e MODEL_NAME={settings.name} tensorflow/serving"
    )
    return 0


def _export_for_runtime(settings, model, image_size) -> int:
    import os

    from sare_tf.export import exporter

    export = exporter(settings.format)

    calibration = None
    if settings.calibration:
        from sare_tf.data import GeoDataset

        calibration = GeoDataset.load(
            settings.calibration, image_root=settings.image_root
        ).db_image_paths()
        if settings.quantize == "int8":
            count = min(settings.calibration_count, len(calibration))
            print(
                f"Calibrating int8 on {count} database images of {settings.calibration}", flush=True
            )
    info = export(
        model, root=settings.export_root, name=settings.name, version=settings.version,
        image_size=image_size, quantize=settings.quantize, calibration_paths=calibration,
        calibration_count=settings.calibration_count, source_model=os.path.abspath(settings.model),
    )  # fmt: skip
    label = {"onnx": "ONNX", "litert": "LiteRT"}[settings.format]
    print(
        f"Exported {settings.name} version {info['version']} as {label} ({settings.quantize}): "
        f"{info['path']}\n  descriptor: {info['descriptor_dim']} dims at "
        f"{image_size[0]}x{image_size[1]}; evaluate it with sare-tf evaluate --model {info['path']}"
    )
    return 0
