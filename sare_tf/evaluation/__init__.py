"""Evaluation: descriptor extraction, retrieval (the faiss search of `sare_tf.index`), Recall@N, mAP and plots.

Typical use:

    from sare_tf.evaluation import evaluate_dataset
    metrics = evaluate_dataset(model, dataset, image_size=(480, 640))   # {"recall@1": ..}

Building blocks: `extract_descriptors` (images -> `[N, D]` float32), `search` / `build_index`
(faiss exact, IVF-PQ or HNSW), `recall_at_n` / `evaluate_retrieval` (Recall@N with the Tokyo 24/7
and TokyoTM protocols from `protocols`), `mean_average_precision` with the Oxford / Paris /
Holidays readers, `load_descriptor_model` (`.keras` or SavedModel; owned by `sare_tf.artifacts.descriptor_model`, as `encode` is by `sare_tf.encoding`) and the figures in `plots`.

Importing this package does not import TensorFlow; the functions that need it import it.
"""

from __future__ import annotations

from sare_tf.artifacts import DescriptorModel, load_descriptor_model
from sare_tf.encoding import encode, extract_descriptors
from sare_tf.evaluation.average_precision import (
    RetrievalBenchmark,
    average_precision,
    load_holidays,
    load_oxford_paris,
    mean_average_precision,
    read_oxford_paris_ground_truth,
)
from sare_tf.evaluation.evaluate import (
    DatasetEvaluation,
    evaluate_benchmark,
    evaluate_dataset,
    run_dataset_evaluation,
)
from sare_tf.evaluation.protocols import (
    DifferentTimeFilter,
    PanoramaSuppression,
    RankingProtocol,
    panorama_ids_from_file_names,
    protocol_for_dataset,
    ranked_search,
)
from sare_tf.evaluation.recall import (
    RecallResult,
    correct_retrievals,
    evaluate_retrieval,
    queries_without_positive,
    recall_at_n,
    recall_from_ranking,
)
from sare_tf.index.faiss_search import (
    INDEX_TYPES,
    IndexConfig,
    build_index,
    inner_ivfpq,
    search,
    search_index,
)

__all__ = [
    "INDEX_TYPES",
    "DatasetEvaluation",
    "DifferentTimeFilter",
    "IndexConfig",
    "DescriptorModel",
    "PanoramaSuppression",
    "RankingProtocol",
    "RecallResult",
    "RetrievalBenchmark",
    "average_precision",
    "build_index",
    "inner_ivfpq",
    "correct_retrievals",
    "evaluate_benchmark",
    "evaluate_dataset",
    "evaluate_retrieval",
    "encode",
    "extract_descriptors",
    "load_descriptor_model",
    "load_holidays",
    "load_oxford_paris",
    "mean_average_precision",
    "panorama_ids_from_file_names",
    "protocol_for_dataset",
    "queries_without_positive",
    "ranked_search",
    "read_oxford_paris_ground_truth",
    "recall_at_n",
    "recall_from_ranking",
    "run_dataset_evaluation",
    "search",
    "search_index",
]
