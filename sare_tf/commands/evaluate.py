"""`sare-tf evaluate`: Recall@N (and mAP) of one or several models on a dataset."""

from __future__ import annotations

import os
import time

import numpy as np

from sare_tf.commands._index_flags import add_index_arguments, index_config
from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.evaluation.settings import EvaluationSettings

HELP = (
    "Measure Recall@N (or mAP) of .keras / SavedModel models on a dataset; write metrics and plots."
)
DESCRIPTION = """\
Extracts descriptors of the database and query images with each model, searches the database
with faiss (exact by default) and reports Recall@1/5/10/20: the share of queries with a database
image within the positive radius (25 m) among the top N. Writes metrics.json, a Recall@N curve
(N = 1..25, all models on one plot) and, with --tsne, a t-SNE map of query descriptors.

Datasets: a Pittsburgh / Tokyo .mat dbStruct, a .csv or a dataset folder (see GeoDataset.load).
Tokyo 24/7 (name containing "tokyo247") is evaluated with its panorama non-maximum suppression
and 640-pixel queries; TokyoTM files (with time stamps) drop same-time database images.
An Oxford 5k / Paris 6k ground-truth folder (*_query.txt, *_good.txt, ...) or --protocol
holidays gives mAP instead (query regions cropped as in the standard protocol).
"""


def add_arguments(parser) -> None:
    """One flag per field of `EvaluationSettings` and of `IndexConfig`."""
    add_config_arguments(parser, EvaluationSettings)
    add_index_arguments(parser)


def _is_oxford_paris_folder(path: str) -> bool:
    import glob

    return os.path.isdir(path) and bool(glob.glob(os.path.join(path, "*_query.txt")))


def _image_sizes(models, names, requested) -> dict:
    """Per model, the image size evaluation uses (None: native sizes), said aloud."""
    from sare_tf.artifacts import resolve_image_size

    sizes = {}
    for model, name in zip(models, names, strict=True):
        size = resolve_image_size(model, requested)
        sizes[name] = size
        if size is None:
            print(
                f"Note: {name} does not record the image size it was trained at; evaluating at "
                "the images' native sizes. Pass --image-size H W to choose."
            )
    return sizes


def run(args) -> int:
    from sare_tf.artifacts import check_runtime
    from sare_tf.data.loading import dataset_path_exists
    from sare_tf.evaluation import load_descriptor_model
    from sare_tf.evaluation.report import unique_model_names

    settings = config_from_args(EvaluationSettings, args)
    index = index_config(args)
    dataset_path = os.fspath(settings.dataset)
    if not dataset_path_exists(dataset_path):
        raise FileNotFoundError(f"Dataset not found. Received: --dataset {dataset_path!r}")
    models = [load_descriptor_model(path, precision=settings.precision) for path in settings.model]
    check_runtime(settings.runtime, models)
    os.makedirs(settings.out, exist_ok=True)
    names = unique_model_names(models)
    mode = "map" if settings.protocol in ("oxford", "holidays") else "recall"
    if settings.protocol == "auto" and _is_oxford_paris_folder(dataset_path):
        mode = "map"
    sizes = _image_sizes(models, names, settings.image_size)
    if mode == "map":
        return _run_map(settings, index, models, names, sizes)
    return _run_recall(settings, index, models, names, sizes)


def _run_recall(settings, index, models, names, sizes) -> int:
    from sare_tf.data import GeoDataset
    from sare_tf.evaluation.plots import plot_recall_curves
    from sare_tf.evaluation.report import RecallReport

    dataset = GeoDataset.load(settings.dataset, image_root=settings.image_root)
    print(dataset.summary() if hasattr(dataset, "summary") else dataset.name)
    report = RecallReport.for_dataset(
        dataset, os.fspath(settings.dataset), index, settings.image_size, settings.ground_truth
    )
    pca_dims = _pca_dims(settings)
    for model, name in zip(models, names, strict=True):
        _evaluate_model(settings, dataset, report, model, name, sizes[name], pca_dims, index)
    curve_path = plot_recall_curves(
        report.curves, os.path.join(settings.out, "recall_curve.png"), title=dataset.name
    )
    report.header["recall_curve_png"] = curve_path
    metrics_path = os.path.join(settings.out, "metrics.json")
    report.write(metrics_path)
    print(report.tables(pca_fitted_on=settings.pca_from or "the evaluated database"))
    print(f"Wrote {metrics_path} and {curve_path}")
    return 0


def _pca_dims(settings):
    from sare_tf.evaluation.pca_sweep import parse_pca_dims

    return parse_pca_dims(settings.pca_dims) if settings.pca_dims else None


def _evaluate_model(
    settings, dataset, report, model, name: str, image_size, pca_dims, index
) -> None:
    """Evaluates one model and adds it (and what the flags ask for) to the report."""
    from sare_tf.evaluation import run_dataset_evaluation
    from sare_tf.evaluation.report import CURVE_MAX_N, RECALL_NS, size_text

    print(f"\n== {name} ({model.path}) at {size_text(image_size)} image size")
    start = time.perf_counter()
    pca_fit = (
        _database_descriptors(settings, model, image_size)
        if pca_dims and settings.pca_from
        else None
    )
    descriptor_dir = None
    if settings.keep_descriptors:
        descriptor_dir = os.path.join(settings.out, "descriptors", name.replace("/", "_"))
    evaluation = run_dataset_evaluation(
        model, dataset, image_size=image_size, progress=not settings.quiet, ns=RECALL_NS,
        index=index, batch_size=settings.batch_size,
        query_long_side=settings.query_long_side, protocol=settings.protocol, max_n=CURVE_MAX_N,
        ground_truth=settings.ground_truth, pca_dims=pca_dims, pca_fit_descriptors=pca_fit,
        descriptor_dir=descriptor_dir,
    )  # fmt: skip
    if settings.save_predictions:
        _save_predictions(settings, dataset, evaluation, name)
    if settings.hloc_out:
        _write_hloc(settings, dataset, evaluation, name)
    entry = report.add_model(name, model, image_size, evaluation, start)
    if settings.sequence_length:
        sequence = _sequence_matching(settings, dataset, evaluation)
        report.add_sequence_matching(name, image_size, settings.sequence_length, sequence.metrics())
    if dataset.query_attributes:
        report.add_conditions(name, evaluation.result, dataset.query_attributes)
    if evaluation.pca_results:
        report.add_pca_sweep(
            name, evaluation.pca_results, settings.pca_from or "the evaluated database"
        )
    if settings.tsne:
        entry.update(_tsne_maps(settings, dataset, evaluation, name))


def _tsne_maps(settings, dataset, evaluation, name: str) -> dict:
    """The t-SNE maps of the query descriptors (by place, and with the images); their paths."""
    from sare_tf.evaluation.plots import plot_query_map, plot_thumbnail_map

    stem = name.replace("/", "_")
    tsne_path = os.path.join(settings.out, f"tsne_{stem}.png")
    plot_query_map(
        evaluation.query_desc, dataset.query_utm, tsne_path,
        title=f"{name}: query descriptors by place (t-SNE)",
    )  # fmt: skip
    thumbnails_path = os.path.join(settings.out, f"tsne_images_{stem}.png")
    valid = np.flatnonzero(evaluation.query_valid)
    plot_thumbnail_map(
        evaluation.query_desc[valid], [dataset.query_image_paths()[i] for i in valid],
        thumbnails_path, title=f"{name}: query images at their descriptors' t-SNE positions",
    )  # fmt: skip
    return {"tsne_png": tsne_path, "tsne_images_png": thumbnails_path}


def _save_predictions(settings, dataset, evaluation, name: str) -> None:
    from sare_tf.evaluation.predictions import save_predictions

    saved = save_predictions(
        os.path.join(settings.out, "predictions", name.replace("/", "_")), dataset,
        evaluation.query_desc, evaluation.db_desc, evaluation.query_valid, evaluation.db_valid,
        settings.save_predictions, settings.only_wrong,
    )  # fmt: skip
    which = "with a wrong top-1 " if settings.only_wrong else ""
    print(
        f"Saved {saved['saved']} queries {which}beside their top {settings.save_predictions}: {saved['folder']}"
    )


def _write_hloc(settings, dataset, evaluation, name: str) -> None:
    from sare_tf.evaluation.predictions import top_predictions
    from sare_tf.index.hloc_files import (
        check_names,
        retrieval_pairs,
        write_global_descriptors,
        write_pairs,
    )

    folder = os.path.join(settings.hloc_out, name.replace("/", "_"))
    db_ok, query_ok = np.flatnonzero(evaluation.db_valid), np.flatnonzero(evaluation.query_valid)
    db_names = check_names(dataset.db_paths)
    all_query_names = check_names(dataset.query_paths)
    query_names = [all_query_names[i] for i in query_ok]
    features = os.path.join(folder, "global-feats.h5")
    if os.path.exists(features):
        os.remove(features)
    write_global_descriptors(features, [db_names[i] for i in db_ok], evaluation.db_desc[db_ok])
    write_global_descriptors(features, query_names, evaluation.query_desc[query_ok])
    ids = top_predictions(
        evaluation.query_desc[query_ok], evaluation.db_desc, evaluation.db_valid,
        settings.hloc_num_matched,
    )  # fmt: skip
    pairs = write_pairs(
        os.path.join(folder, "pairs-from-retrieval.txt"),
        retrieval_pairs(query_names, db_names, ids),
    )
    print(f"hloc: {features} and {pairs} (names relative to {dataset.image_root})")


def _sequence_matching(settings, dataset, evaluation):
    from sare_tf.evaluation.report import RECALL_NS
    from sare_tf.evaluation.sequence_matching import evaluate_sequence_matching

    if not str(dataset.frame or "").startswith("frame indices"):
        raise ValueError(
            "--sequence-length needs frame-aligned traversals (a folder of traversal folders); "
            f"{dataset.name} is not one."
        )
    return evaluate_sequence_matching(
        evaluation.query_desc, evaluation.db_desc, dataset.query_utm, dataset.db_utm,
        settings.sequence_length, RECALL_NS, dist_thr=dataset.pos_dist_thr,
    )  # fmt: skip


def _database_descriptors(settings, model, image_size):
    """The database descriptors of `--pca-from` (what the PCA of the sweep is learnt on)."""
    from sare_tf.data import GeoDataset
    from sare_tf.encoding import extract_descriptors

    source = GeoDataset.load(settings.pca_from, image_root=settings.image_root)
    print(f"Extracting {source.num_db} database descriptors of {source.name} for the PCA")
    descriptors, valid = extract_descriptors(
        model, source.db_image_paths(), image_size=image_size, batch_size=settings.batch_size,
        progress=not settings.quiet, return_valid=True,
    )  # fmt: skip
    return descriptors[valid]


def _run_map(settings, index, models, names, sizes) -> int:
    from sare_tf.evaluation import evaluate_benchmark, load_holidays, load_oxford_paris
    from sare_tf.evaluation.report import MapReport, size_text

    if settings.protocol == "holidays":
        benchmark = load_holidays(settings.image_root or settings.dataset)
    else:
        benchmark = load_oxford_paris(settings.dataset, image_root=settings.image_root)
    print(
        f"{benchmark.name}: {len(benchmark.db_paths)} database images, "
        f"{len(benchmark.query_paths)} queries"
    )
    report = MapReport.for_benchmark(benchmark, os.fspath(settings.dataset))
    for model, name in zip(models, names, strict=True):
        image_size = sizes[name]
        print(f"\n== {name} ({model.path}) at {size_text(image_size)} image size")
        result = evaluate_benchmark(
            model, benchmark, image_size=image_size, batch_size=settings.batch_size, index=index,
            long_side=settings.query_long_side, progress=not settings.quiet,
        )  # fmt: skip
        report.add_model(name, model, image_size, result)
    metrics_path = os.path.join(settings.out, "metrics.json")
    report.write(metrics_path)
    print("\n" + report.table())
    print(f"Wrote {metrics_path}")
    return 0
