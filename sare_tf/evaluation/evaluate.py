"""Evaluating a model on a geo-tagged dataset (Recall@N) or a retrieval benchmark (mAP)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time

import numpy as np

from sare_tf.artifacts import DescriptorModel
from sare_tf.encoding import extract_descriptors, predict_fn
from sare_tf.evaluation.average_precision import mean_average_precision
from sare_tf.evaluation.pca_sweep import pca_sweep
from sare_tf.evaluation.protocols import protocol_for_dataset, ranked_search
from sare_tf.evaluation.recall import (
    DEFAULT_NS,
    RecallResult,
    check_ns,
    evaluate_retrieval,
    log_recall_caveats,
)
from sare_tf.index.faiss_search import build_index

logger = logging.getLogger("sare_tf.evaluation")

TOKYO247_QUERY_LONG_SIDE = 640


@dataclasses.dataclass
class DatasetEvaluation:
    """Everything measured by `run_dataset_evaluation`.

    Attributes:
        metrics: `{"recall@1": .., ...}` fractions.
        result: the `RecallResult` (per-query first correct rank, counts of failures).
        query_desc: `[Q, D]` query descriptors.
        db_desc: `[Ndb, D]` database descriptors.
        query_valid: `[Q]` bool, query images that were read.
        db_valid: `[Ndb]` bool, database images that were read.
        protocol: "standard", "tokyo247" or "tokyotm".
        seconds: wall time of "extraction" and "search".
        pca_results: `{dim: RecallResult}` of the PCA sweep (`pca_dims`), else empty.
    """

    metrics: dict[str, float]
    result: RecallResult
    query_desc: np.ndarray
    db_desc: np.ndarray
    query_valid: np.ndarray
    db_valid: np.ndarray
    protocol: str
    seconds: dict[str, float]
    pca_results: dict = dataclasses.field(default_factory=dict)


def _unwrap(model, image_size):
    """`(images -> descriptors function, image size)`, traced once for database and queries.

    Accepts a `DescriptorModel` too; its fixed input size is the default image size.
    """

    if isinstance(model, DescriptorModel):
        model, image_size = model.model, image_size if image_size is not None else model.image_size
    return predict_fn(model), image_size


GROUND_TRUTHS = ("distance", "labels")


def _labels_for(dataset, ground_truth: str) -> dict:
    if ground_truth not in GROUND_TRUTHS:
        raise ValueError(
            f"Unknown ground truth. Expected one of {GROUND_TRUTHS}. Received: {ground_truth!r}"
        )
    if ground_truth == "distance":
        return {}
    if not getattr(dataset, "has_labels", False):
        raise ValueError(
            f"{dataset.name} carries no place labels; label ground truth needs them (a CSV "
            "'label' column, e.g. Sf-0 building IDs)."
        )
    return {"query_labels": dataset.query_labels, "db_labels": dataset.db_labels}


def run_dataset_evaluation(
    model,
    dataset,
    image_size=None,
    ns=DEFAULT_NS,
    index="flat",
    batch_size: int = 16,
    query_long_side: int | None = None,
    protocol: str = "auto",
    dist_thr: float | None = None,
    max_n: int = 25,
    descriptor_dir: str | os.PathLike | None = None,
    progress: bool = True,
    ground_truth: str = "distance",
    pca_dims=None,
    pca_fit_descriptors=None,
) -> DatasetEvaluation:
    """Extracts query and database descriptors and measures Recall@N.

    Args:
        model: a `keras.Model`, a `DescriptorModel` or an images -> descriptors callable.
        dataset: a `sare_tf.data.GeoDataset`.
        image_size: `(height, width)` for every image, or None to keep image sizes.
        ns: the N to report.
        index: "flat" (exact), "ivfpq", "hnsw" or an `IndexConfig` with their settings (see
            `sare_tf.index.faiss_search`).
        batch_size: images per model call.
        query_long_side: shrink queries to this longer side. With the Tokyo 24/7 protocol and
            no `image_size`, it defaults to 640 (the protocol's query size).
        protocol: "auto", "standard", "tokyo247" or "tokyotm" (see `protocols`).
        dist_thr: correct-retrieval radius; default the dataset's `pos_dist_thr` (25 m).
        max_n: search deep enough for a Recall@1..max_n curve.
        descriptor_dir: write `db_descriptors.npy` / `query_descriptors.npy` there (memory
            mapped) instead of keeping them in memory.
        progress: progress bars.
        ground_truth: "distance" (a database image within `dist_thr` is correct) or "labels"
            (one sharing the query's place label: Sf-0's building-ID protocol; the dataset
            must carry labels).
        pca_dims: also evaluate the descriptors PCA-whitened to each of these sizes (first D
            components, then L2; `sare_tf.evaluation.pca_sweep`), from the same extraction.
        pca_fit_descriptors: what that PCA is learnt on (default the database descriptors).

    Returns:
        A `DatasetEvaluation`.
    """
    ns = check_ns(ns)
    labels = _labels_for(dataset, ground_truth)
    model, image_size = _unwrap(model, image_size)
    ranking_protocol = protocol_for_dataset(dataset, protocol)
    protocol_name = ranking_protocol.name if ranking_protocol is not None else "standard"
    if protocol_name == "tokyo247" and query_long_side is None and image_size is None:
        query_long_side = TOKYO247_QUERY_LONG_SIDE
    dist_thr = float(dataset.pos_dist_thr if dist_thr is None else dist_thr)
    common = dict(image_size=image_size, batch_size=batch_size, progress=progress)
    start = time.perf_counter()
    db_desc, db_valid = _extract(model, dataset, "db", descriptor_dir, **common)
    query_desc, query_valid = _extract(
        model, dataset, "query", descriptor_dir, long_side=query_long_side, **common
    )
    extraction_seconds = time.perf_counter() - start
    search = functools.partial(
        evaluate_retrieval, query_utm=dataset.query_utm, db_utm=dataset.db_utm, ns=ns,
        dist_thr=dist_thr, index=index, protocol=ranking_protocol, max_n=max_n,
        invalid_queries=~query_valid, invalid_db=~db_valid, **labels,
    )  # fmt: skip
    start = time.perf_counter()
    result = search(query_desc, db_desc)
    search_seconds = time.perf_counter() - start
    log_recall_caveats(result, dataset.name)
    pca_results = {}
    if pca_dims:
        fit_on = db_desc[db_valid] if pca_fit_descriptors is None else pca_fit_descriptors
        pca_results = pca_sweep(query_desc, db_desc, pca_dims, search, fit_on)
    return DatasetEvaluation(
        result.metrics(), result, query_desc, db_desc, query_valid, db_valid, protocol_name,
        {"extraction": extraction_seconds, "search": search_seconds}, pca_results,
    )  # fmt: skip


def _extract(model, dataset, which: str, descriptor_dir, **kwargs):
    """`(descriptors, valid)` of the dataset's "db" or "query" images, memory-mapped into
    `<descriptor_dir>/<which>_descriptors.npy` when a folder is given."""
    paths = dataset.db_image_paths() if which == "db" else dataset.query_image_paths()
    what = "database" if which == "db" else "query"
    logger.info("Extracting %d %s descriptors (%s)", len(paths), what, dataset.name)
    out_path = None
    if descriptor_dir is not None:
        out_path = os.path.join(os.fspath(descriptor_dir), f"{which}_descriptors.npy")
    return extract_descriptors(model, paths, out_path=out_path, return_valid=True, **kwargs)


def evaluate_dataset(
    model,
    dataset,
    image_size=None,
    ns=DEFAULT_NS,
    index="flat",
    **kwargs,
) -> dict[str, float]:
    """Recall@N of a model on a dataset's test queries.

    Args:
        model: a `keras.Model` (image -> descriptor), a `DescriptorModel` or a callable.
        dataset: a `sare_tf.data.GeoDataset`.
        image_size: `(height, width)` to resize images to, or None to keep their size.
        ns: the N to report.
        index: "flat" (exact, default), "ivfpq" or "hnsw".
        **kwargs: more `run_dataset_evaluation` arguments (batch_size, protocol,
            query_long_side, progress, index parameters, ...).

    Returns:
        `{"recall@1": .., "recall@5": .., ...}` as fractions. Queries without a database image
        within the positive radius, or whose image cannot be read, count as failures (a warning
        gives their number).

    Example:
        >>> metrics = evaluate_dataset(model, GeoDataset.load("pitts30k_test.mat"), (480, 640))
        >>> metrics["recall@5"]
        0.87
    """
    return run_dataset_evaluation(model, dataset, image_size, ns, index, **kwargs).metrics


def evaluate_benchmark(
    model,
    benchmark,
    image_size=None,
    batch_size: int = 16,
    index="flat",
    long_side: int | None = None,
    progress: bool = True,
) -> dict:
    """mAP of a model on an Oxford / Paris / Holidays style benchmark.

    The whole database is ranked for every query (unreadable database images are left out;
    unreadable queries score AP = 0).

    Args:
        model: a `keras.Model`, a `DescriptorModel` or a callable.
        benchmark: a `RetrievalBenchmark` (`load_oxford_paris`, `load_holidays`).
        image_size: `(height, width)` or None to keep image sizes.
        batch_size: images per model call.
        index: "flat", "ivfpq", "hnsw" or an `IndexConfig`.
        long_side: shrink images whose longer side exceeds this.
        progress: progress bars.

    Returns:
        `{"map": .., "num_queries": .., "num_db": .., "aps": {query name: AP}}`.
    """

    model, image_size = _unwrap(model, image_size)
    common = dict(image_size=image_size, batch_size=batch_size, long_side=long_side)
    db_desc, db_valid = extract_descriptors(
        model, benchmark.db_paths, progress=progress, return_valid=True, **common
    )
    query_desc, query_valid = extract_descriptors(
        model,
        benchmark.query_paths,
        boxes=benchmark.query_boxes,
        progress=progress,
        return_valid=True,
        **common,
    )
    kept = np.flatnonzero(db_valid)
    faiss_index = build_index(db_desc[kept], index)
    ranked = ranked_search(faiss_index, query_desc, len(kept), db_ids=kept)
    ranked[~query_valid] = -1
    mean_ap, aps = mean_average_precision(ranked, benchmark.positives, benchmark.junk)
    return {
        "map": mean_ap,
        "num_queries": len(benchmark.query_paths),
        "num_db": len(benchmark.db_paths),
        "num_unreadable_db": int(np.count_nonzero(~db_valid)),
        "num_unreadable_queries": int(np.count_nonzero(~query_valid)),
        "aps": dict(zip(benchmark.query_names, aps.tolist(), strict=True)),
    }
