"""Evaluation: descriptor extraction, retrieval (the faiss search of `sare_tf.index`), Recall@N, mAP and plots.

Typical use:

    from sare_tf.evaluation import evaluate_dataset
    metrics = evaluate_dataset(model, dataset, image_size=(480, 640))   # {"recall@1": ..}

Building blocks: `extract_descriptors` (images -> `[N, D]` float32), `search` / `build_index`
(faiss exact, IVF-PQ or HNSW), `recall_at_n` / `evaluate_retrieval` (Recall@N with the Tokyo 24/7
and TokyoTM protocols from `protocols`), `mean_average_precision` with the Oxford / Paris /
Holidays readers, `load_descriptor_model` (`.keras` or SavedModel; owned by
`sare_tf.artifacts.descriptor_model`, as `encode` is by `sare_tf.encoding`) and the figures in
`plots`. Names load on first use (`sare_tf.lazy_exports`).
"""

from __future__ import annotations

from sare_tf.evaluation.average_precision import (  # the module's namesake, eagerly
    average_precision as average_precision,
)
from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "sare_tf.artifacts": ("DescriptorModel", "load_descriptor_model"),
        "sare_tf.encoding": ("encode", "extract_descriptors"),
        "average_precision": (
            "RetrievalBenchmark",
            "load_holidays",
            "load_oxford_paris",
            "mean_average_precision",
            "read_oxford_paris_ground_truth",
        ),
        "evaluate": (
            "DatasetEvaluation",
            "evaluate_benchmark",
            "evaluate_dataset",
            "run_dataset_evaluation",
        ),
        "protocols": (
            "DifferentTimeFilter",
            "PanoramaSuppression",
            "RankingProtocol",
            "panorama_ids_from_file_names",
            "protocol_for_dataset",
            "ranked_search",
        ),
        "recall": (
            "RecallResult",
            "correct_retrievals",
            "evaluate_retrieval",
            "queries_without_positive",
            "recall_at_n",
            "recall_from_ranking",
        ),
        "sare_tf.index.config": ("INDEX_TYPES", "IndexConfig"),
        "sare_tf.index.faiss_search": ("build_index", "inner_ivfpq", "search", "search_index"),
    },
)
__all__ = sorted([*__all__, "average_precision"])
