"""`sare-tf export`: a trained model as a versioned SavedModel for TF Serving."""

from __future__ import annotations

import argparse

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
    parser.add_argument("--model", required=True, help="the model to export (.keras file)")
    parser.add_argument(
        "--name", required=True, help="model name (folder and TF Serving MODEL_NAME)"
    )
    parser.add_argument(
        "--version", type=int, default=None, help="version number (default: the next free one)"
    )
    parser.add_argument(
        "--root", default=None,
        help="export root (default: saved_models for SavedModels, onnx_models for ONNX, "
        "litert_models for LiteRT)",
    )  # fmt: skip
    parser.add_argument(
        "--format", default="saved_model", choices=("saved_model", "onnx", "litert"),
        help="saved_model (TF Serving; default), onnx (ONNX Runtime) or litert (LiteRT, the "
        "former TensorFlow Lite): image -> descriptor in one graph",
    )  # fmt: skip
    parser.add_argument(
        "--quantize", default="none", choices=("none", "dynamic", "int8"),
        help="onnx / litert: int8 = the backbone in int8, calibrated (needs --calibration; "
        "preprocessing, NetVLAD, PCA and L2 stay float32); dynamic (litert) = int8 weights, "
        "float activations",
    )  # fmt: skip
    parser.add_argument(
        "--calibration", default=None, metavar="DATASET",
        help="dataset whose database images calibrate the int8 quantization",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-count", type=int, default=200,
        help="calibration images (a seeded subset; default 200)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="size serve_jpeg resizes images to (default: the size the model records, as models "
        "trained by sare-tf train do, or its fixed input size)",
    )
    parser.add_argument(
        "--pca-dim", type=int, default=None, help="add PCA whitening to D dims (needs --pca-from)"
    )
    parser.add_argument(
        "--pca-from",
        default=None,
        metavar="DATASET",
        help="dataset (.mat dbStruct, .csv or folder) whose database images PCA is fitted on",
    )
    parser.add_argument(
        "--image-root", default=None, help="folder the dataset's image paths are relative to"
    )
    parser.add_argument(
        "--pca-max-images",
        type=int,
        default=10_000,
        help="database images used at most for the PCA fit (seeded subset; default 10000)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass for the PCA fit"
    )
    parser.add_argument(
        "--no-keras-copy",
        action="store_true",
        help="do not write the NAME/VERSION.keras copy beside the SavedModel",
    )


def run(args: argparse.Namespace) -> int:
    import os

    import sare_tf.layers  # noqa: F401  (registers the custom layers for loading)
    from sare_tf.export import export_versioned, resolve_image_size, serving_model

    if (args.pca_dim is None) != (args.pca_from is None):
        raise ValueError(
            "--pca-dim and --pca-from go together. "
            f"Received: --pca-dim={args.pca_dim}, --pca-from={args.pca_from}"
        )
    from sare_tf.artifacts import read_keras_model

    model = serving_model(read_keras_model(args.model))
    image_size = resolve_image_size(model, args.image_size)
    if args.pca_dim is not None:
        from sare_tf.data import GeoDataset
        from sare_tf.export.pca import add_pca_whitening

        dataset = GeoDataset.load(args.pca_from, image_root=args.image_root)
        print(
            f"Fitting PCA whitening to {args.pca_dim} dims on the database images of "
            f"{dataset.name} ({dataset.num_db} images, at most {args.pca_max_images} used)."
        )
        model = add_pca_whitening(
            model,
            dataset.db_image_paths(),
            args.pca_dim,
            image_size,
            max_images=args.pca_max_images,
            batch_size=args.batch_size,
        )
    if args.format in ("onnx", "litert"):
        return _export_for_runtime(args, model, image_size)
    if args.quantize != "none" or args.calibration:
        raise ValueError("--quantize and --calibration apply to --format onnx and litert.")
    result = export_versioned(
        model,
        root=args.root or "saved_models",
        name=args.name,
        version=args.version,
        image_size=image_size,
        source_model=os.path.abspath(args.model),
        keras_copy=not args.no_keras_copy,
    )
    print(
        f"Exported {args.name} version {result.version}: {result.saved_model_dir}\n"
        f"  Keras copy: {result.keras_path}\n"
        f"  descriptor: {result.info['descriptor_dim']} dims; serve_jpeg resizes to "
        f"{image_size[0]}x{image_size[1]}\n"
        f"  serve it: docker run -p 8501:8501 -p 8500:8500 --mount type=bind,"
        f"source={os.path.dirname(result.saved_model_dir)},target=/models/{args.name} "
        f"-e MODEL_NAME={args.name} tensorflow/serving"
    )
    return 0


def _export_for_runtime(args, model, image_size) -> int:
    import os

    from sare_tf.export import exporter

    export = exporter(args.format)

    calibration = None
    if args.calibration:
        from sare_tf.data import GeoDataset

        calibration = GeoDataset.load(args.calibration, image_root=args.image_root).db_image_paths()
        if args.quantize == "int8":
            count = min(args.calibration_count, len(calibration))
            print(f"Calibrating int8 on {count} database images of {args.calibration}", flush=True)
    info = export(
        model, root=args.root or f"{args.format}_models", name=args.name, version=args.version,
        image_size=image_size, quantize=args.quantize, calibration_paths=calibration,
        calibration_count=args.calibration_count, source_model=os.path.abspath(args.model),
    )  # fmt: skip
    label = {"onnx": "ONNX", "litert": "LiteRT"}[args.format]
    print(
        f"Exported {args.name} version {info['version']} as {label} ({args.quantize}): "
        f"{info['path']}\n  descriptor: {info['descriptor_dim']} dims at "
        f"{image_size[0]}x{image_size[1]}; evaluate it with sare-tf evaluate --model {info['path']}"
    )
    return 0
