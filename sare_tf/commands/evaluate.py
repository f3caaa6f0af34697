"""`sare-tf evaluate`: Recall@N (and mAP) of one or several models on a dataset."""

from __future__ import annotations

import os
import time

import numpy as np

from sare_tf.atomic import write_json_atomic
from sare_tf.commands._index_flags import add_index_arguments, index_config
from sare_tf.commands._runtime_flag import add_runtime_argument

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
    parser.add_argument(
        "--model",
        nargs="+",
        required=True,
        metavar="PATH",
        help=".keras file(s), SavedModel folder(s) (a TF Serving root uses its newest version) "
        "and/or ONNX / LiteRT exports (sare-tf export --format onnx|litert)",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="MAT_OR_FOLDER",
        help=".mat dbStruct, .csv, dataset folder, Oxford/Paris ground-truth folder or Holidays folder",
    )
    parser.add_argument(
        "--image-root", default=None, help="folder the dataset's image paths are relative to"
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=None,
        help="resize every image to H x W (default: the size each model records, i.e. the "
        "size it was trained at; native image sizes for a model that records none)",
    )
    parser.add_argument(
        "--query-long-side",
        type=int,
        default=None,
        help="shrink queries to this longer side (default 640 for Tokyo 24/7 without --image-size)",
    )
    parser.add_argument(
        "--protocol",
        default="auto",
        choices=("auto", "standard", "tokyo247", "tokyotm", "oxford", "holidays"),
        help="ranking protocol; 'auto' picks from the dataset (default: %(default)s)",
    )
    add_index_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    add_runtime_argument(parser)
    parser.add_argument(
        "--precision",
        default=None,
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="compute precision for .keras models (default: as saved)",
    )
    parser.add_argument(
        "--out", default="runs/evaluate", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--tsne",
        action="store_true",
        help="also write t-SNE maps of the query descriptors per model: points coloured by "
        "place, and the query images drawn at their positions (the paper's Figs. 9-10)",
    )
    parser.add_argument(
        "--ground-truth", default="distance", choices=("distance", "labels"),
        help="distance: a database image within the positive radius is correct (default); "
        "labels: one sharing the query's place label (Sf-0's building IDs, a CSV 'label' column)",
    )  # fmt: skip
    parser.add_argument(
        "--pca-dims", default=None, metavar="D1,D2,...",
        help="also report Recall@N with descriptors PCA-whitened to each size (first D "
        "components, then L2; one extraction), e.g. 4096,2048,1024,512,256,128 (the paper's "
        "Table 5)",
    )  # fmt: skip
    parser.add_argument(
        "--pca-from", default=None, metavar="DATASET",
        help="learn that PCA on this dataset's database images (e.g. the training split; "
        "default: the evaluated database)",
    )  # fmt: skip
    parser.add_argument(
        "--sequence-length", type=int, default=None, metavar="L",
        help="frame-aligned traversals only: also rank by sequence matching over L consecutive "
        "frames (SeqSLAM-style, velocity 1; odd L)",
    )  # fmt: skip
    parser.add_argument(
        "--save-predictions", type=int, default=0, metavar="N",
        help="write each query beside its top-N matches (green right, red wrong) as "
        "OUT/predictions/<model>/<query>.png, and predictions.txt with the paths",
    )  # fmt: skip
    parser.add_argument(
        "--only-wrong", action="store_true",
        help="with --save-predictions: only the queries whose top-1 is wrong",
    )  # fmt: skip
    parser.add_argument(
        "--hloc-out", default=None, metavar="DIR",
        help="also write hloc's global-feats.h5 (database and query descriptors, named by their "
        "paths relative to the image root) and pairs-from-retrieval.txt into DIR/<model>/",
    )  # fmt: skip
    parser.add_argument(
        "--hloc-num-matched", type=int, default=20, metavar="K",
        help="database images per query in the hloc pairs file (default 20)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--keep-descriptors",
        action="store_true",
        help="store descriptors as .npy files in the output folder (memory-mapped while written)",
    )


def _unique_names(models) -> list[str]:
    """Short labels that tell the models apart: a model's name, with as many of its parent
    folders as it takes (`runs/a/best.keras` and `runs/b/best.keras` -> `a/best`, `b/best`);
    the same file given twice is numbered."""
    paths = [
        os.path.normpath(os.path.abspath(m.path)) if m.path else f"<model {i}>"
        for i, m in enumerate(models)
    ]
    parents = [path.split(os.sep)[:-1] for path in paths]
    bases = [m.name.split("/")[-1] for m in models]
    names = [m.name for m in models]

    def clashing(names):
        return {
            n for n in names if len({p for p, m in zip(paths, names, strict=True) if m == n}) > 1
        }

    depth = 0
    while (clash := clashing(names)) and depth < max((len(p) for p in parents), default=0):
        depth += 1
        names = [
            "/".join([*parent[-depth:], base]) if name in clash else name
            for parent, base, name in zip(parents, bases, names, strict=True)
        ]
    seen = {}
    for position, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[position] = f"{name} ({seen[name]})"
    return names


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

    dataset_path = os.fspath(args.dataset)
    if not dataset_path_exists(dataset_path):
        raise FileNotFoundError(f"Dataset not found. Received: --dataset {dataset_path!r}")
    image_size = tuple(args.image_size) if args.image_size else None
    models = [load_descriptor_model(path, precision=args.precision) for path in args.model]
    check_runtime(args.runtime, models)
    os.makedirs(args.out, exist_ok=True)
    names = _unique_names(models)
    mode = "map" if args.protocol in ("oxford", "holidays") else "recall"
    if args.protocol == "auto" and _is_oxford_paris_folder(dataset_path):
        mode = "map"
    sizes = _image_sizes(models, names, image_size)
    if mode == "map":
        return _run_map(args, models, names, sizes)
    return _run_recall(args, models, names, sizes)


def _run_recall(args, models, names, sizes) -> int:
    from sare_tf.data import GeoDataset
    from sare_tf.evaluation.plots import plot_recall_curves
    from sare_tf.evaluation.report import RecallReport

    dataset = GeoDataset.load(args.dataset, image_root=args.image_root)
    print(dataset.summary() if hasattr(dataset, "summary") else dataset.name)
    index = index_config(args)
    report = RecallReport.for_dataset(
        dataset, os.fspath(args.dataset), index, args.image_size, args.ground_truth
    )
    pca_dims = _pca_dims(args)
    for model, name in zip(models, names, strict=True):
        _evaluate_model(args, dataset, report, model, name, sizes[name], pca_dims, index)
    curve_path = plot_recall_curves(
        report.curves, os.path.join(args.out, "recall_curve.png"), title=dataset.name
    )
    report.header["recall_curve_png"] = curve_path
    metrics_path = os.path.join(args.out, "metrics.json")
    report.write(metrics_path)
    print(report.tables(pca_fitted_on=args.pca_from or "the evaluated database"))
    print(f"Wrote {metrics_path} and {curve_path}")
    return 0


def _pca_dims(args):
    from sare_tf.evaluation.pca_sweep import parse_pca_dims

    return parse_pca_dims(args.pca_dims) if args.pca_dims else None


def _evaluate_model(args, dataset, report, model, name: str, image_size, pca_dims, index) -> None:
    """Evaluates one model and adds it (and what the flags ask for) to the report."""
    from sare_tf.evaluation import run_dataset_evaluation
    from sare_tf.evaluation.report import CURVE_MAX_N, RECALL_NS, size_text

    print(f"\n== {name} ({model.path}) at {size_text(image_size)} image size")
    start = time.perf_counter()
    pca_fit = _database_descriptors(args, model, image_size) if pca_dims and args.pca_from else None
    descriptor_dir = None
    if args.keep_descriptors:
        descriptor_dir = os.path.join(args.out, "descriptors", name.replace("/", "_"))
    evaluation = run_dataset_evaluation(
        model, dataset, image_size=image_size, progress=not args.quiet, ns=RECALL_NS,
        index=index, batch_size=args.batch_size,
        query_long_side=args.query_long_side, protocol=args.protocol, max_n=CURVE_MAX_N,
        ground_truth=args.ground_truth, pca_dims=pca_dims, pca_fit_descriptors=pca_fit,
        descriptor_dir=descriptor_dir,
    )  # fmt: skip
    if args.save_predictions:
        _save_predictions(args, dataset, evaluation, name)
    if args.hloc_out:
        _write_hloc(args, dataset, evaluation, name)
    entry = report.add_model(name, model, image_size, evaluation, start)
    if args.sequence_length:
        sequence = _sequence_matching(args, dataset, evaluation)
        report.add_sequence_matching(name, image_size, args.sequence_length, sequence.metrics())
    if dataset.query_attributes:
        report.add_conditions(name, evaluation.result, dataset.query_attributes)
    if evaluation.pca_results:
        report.add_pca_sweep(
            name, evaluation.pca_results, args.pca_from or "the evaluated database"
        )
    if args.tsne:
        entry.update(_tsne_maps(args, dataset, evaluation, name))


def _tsne_maps(args, dataset, evaluation, name: str) -> dict:
    """The t-SNE maps of the query descriptors (by place, and with the images); their paths."""
    from sare_tf.evaluation.plots import plot_query_map, plot_thumbnail_map

    stem = name.replace("/", "_")
    tsne_path = os.path.join(args.out, f"tsne_{stem}.png")
    plot_query_map(
        evaluation.query_desc, dataset.query_utm, tsne_path,
        title=f"{name}: query descriptors by place (t-SNE)",
    )  # fmt: skip
    thumbnails_path = os.path.join(args.out, f"tsne_images_{stem}.png")
    valid = np.flatnonzero(evaluation.query_valid)
    plot_thumbnail_map(
        evaluation.query_desc[valid], [dataset.query_image_paths()[i] for i in valid],
        thumbnails_path, title=f"{name}: query images at their descriptors' t-SNE positions",
    )  # fmt: skip
    return {"tsne_png": tsne_path, "tsne_images_png": thumbnails_path}


def _save_predictions(args, dataset, evaluation, name: str) -> None:
    from sare_tf.evaluation.predictions import save_predictions

    if args.save_predictions < 0 or args.ground_truth != "distance":
        raise ValueError(
            "--save-predictions takes a positive N and the distance ground truth. Received: "
            f"--save-predictions {args.save_predictions}, --ground-truth {args.ground_truth}"
        )
    saved = save_predictions(
        os.path.join(args.out, "predictions", name.replace("/", "_")), dataset,
        evaluation.query_desc, evaluation.db_desc, evaluation.query_valid, evaluation.db_valid,
        args.save_predictions, args.only_wrong,
    )  # fmt: skip
    which = "with a wrong top-1 " if args.only_wrong else ""
    print(
        f"Saved {saved['saved']} queries {which}beside their top {args.save_predictions}: {saved['folder']}"
    )


def _write_hloc(args, dataset, evaluation, name: str) -> None:
    from sare_tf.evaluation.predictions import top_predictions
    from sare_tf.index.hloc_files import (
        check_names,
        retrieval_pairs,
        write_global_descriptors,
        write_pairs,
    )

    folder = os.path.join(args.hloc_out, name.replace("/", "_"))
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
        args.hloc_num_matched,
    )  # fmt: skip
    pairs = write_pairs(
        os.path.join(folder, "pairs-from-retrieval.txt"),
        retrieval_pairs(query_names, db_names, ids),
    )
    print(f"hloc: {features} and {pairs} (names relative to {dataset.image_root})")


def _sequence_matching(args, dataset, evaluation):
    from sare_tf.evaluation.report import RECALL_NS
    from sare_tf.evaluation.sequence_matching import evaluate_sequence_matching

    if not str(dataset.frame or "").startswith("frame indices"):
        raise ValueError(
            "--sequence-length needs frame-aligned traversals (a folder of traversal folders); "
            f"{dataset.name} is not one."
        )
    return evaluate_sequence_matching(
        evaluation.query_desc, evaluation.db_desc, dataset.query_utm, dataset.db_utm,
        args.sequence_length, RECALL_NS, dist_thr=dataset.pos_dist_thr,
    )  # fmt: skip


def _database_descriptors(args, model, image_size):
    """The database descriptors of `--pca-from` (what the PCA of the sweep is learnt on)."""
    from sare_tf.data import GeoDataset
    from sare_tf.encoding import extract_descriptors

    source = GeoDataset.load(args.pca_from, image_root=args.image_root)
    print(f"Extracting {source.num_db} database descriptors of {source.name} for the PCA")
    descriptors, valid = extract_descriptors(
        model, source.db_image_paths(), image_size=image_size, batch_size=args.batch_size,
        progress=not args.quiet, return_valid=True,
    )  # fmt: skip
    return descriptors[valid]


def _run_map(args, models, names, sizes) -> int:
    from sare_tf.evaluation import evaluate_benchmark, load_holidays, load_oxford_paris
    from sare_tf.evaluation.report import format_table, size_text

    if args.protocol == "holidays":
        benchmark = load_holidays(args.image_root or args.dataset)
    else:
        benchmark = load_oxford_paris(args.dataset, image_root=args.image_root)
    print(
        f"{benchmark.name}: {len(benchmark.db_paths)} database images, "
        f"{len(benchmark.query_paths)} queries"
    )
    report = {"dataset": os.fspath(args.dataset), "dataset_name": benchmark.name, "models": {}}
    rows = []
    for model, name in zip(models, names, strict=True):
        image_size = sizes[name]
        print(f"\n== {name} ({model.path}) at {size_text(image_size)} image size")
        result = evaluate_benchmark(
            model,
            benchmark,
            image_size=image_size,
            batch_size=args.batch_size,
            index=index_config(args),
            long_side=args.query_long_side,
            progress=not args.quiet,
        )
        report["models"][name] = {
            "path": model.path,
            "kind": model.kind,
            "image_size": None if image_size is None else list(image_size),
            **result,
        }
        rows.append({"model": name, "image_size": image_size, "map": result["map"]})
    metrics_path = os.path.join(args.out, "metrics.json")
    write_json_atomic(metrics_path, report)
    print(f"\nmAP on {benchmark.name}, in %:")
    print(format_table(rows, ["map"]))
    print(f"Wrote {metrics_path}")
    return 0
