"""The reports of one or several models on a dataset: what `sare-tf evaluate` writes to
`metrics.json` and prints as tables, assembled model by model (`RecallReport` from
`DatasetEvaluation`s, `MapReport` from mAP results), and the names that tell the models apart."""

from __future__ import annotations

import dataclasses
import os
import time

from sare_tf.atomic import write_json_atomic
from sare_tf.evaluation.recall import recall_by_condition

RECALL_NS = (1, 5, 10, 20)
CURVE_MAX_N = 25


def size_text(size) -> str:
    """ "480x640", or "native" for None."""
    return "native" if size is None else f"{size[0]}x{size[1]}"


def format_table(rows: list[dict], columns: list[str], second: str = "image size") -> str:
    """Rows of `{"model", "image_size" or "dims", columns...}` as an aligned text table, in %."""
    header = ["model", second, *columns]
    lines = [
        [
            row["model"],
            str(row["dims"]) if "dims" in row else size_text(row["image_size"]),
            *(f"{100 * row[c]:.2f}" for c in columns),
        ]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *lines, strict=True)]
    rendered = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    rendered.append("  ".join("-" * w for w in widths))
    rendered += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(rendered)


@dataclasses.dataclass
class RecallReport:
    """metrics.json's content and the printed tables, filled one model at a time.

    Attributes:
        header: the dataset, index and protocol settings (the top-level keys of metrics.json).
        models: per model name, its entry (path, kind, image size, Recall@N, curve, counts,
            timings, and the optional breakdowns).
        rows, condition_rows, pca_rows: the rows of the three printed tables.
        curves: per model name, Recall@1..25 (the curve plot).
    """

    header: dict
    models: dict = dataclasses.field(default_factory=dict)
    rows: list = dataclasses.field(default_factory=list)
    condition_rows: list = dataclasses.field(default_factory=list)
    pca_rows: list = dataclasses.field(default_factory=list)
    curves: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def for_dataset(cls, dataset, source: str, index, image_size, ground_truth: str):
        """An empty report of `dataset` (read from `source`) searched with `index` (an
        `IndexConfig`) at the asked `image_size` (None: each model's own)."""
        return cls(
            {
                "dataset": source,
                "dataset_name": dataset.name,
                "num_db": dataset.num_db,
                "num_queries": dataset.num_queries,
                "index": index.kind,
                "index_params": index.settings(),
                "image_size": list(image_size) if image_size else None,  # as asked
                "ground_truth": ground_truth,
            }
        )

    def add_model(self, name: str, model, image_size, evaluation, started: float) -> dict:
        """Adds one model's `DatasetEvaluation` (evaluated since `time.perf_counter()` =
        `started`); returns its entry for the optional parts the caller adds."""
        result = evaluation.result
        curve = result.curve(min(CURVE_MAX_N, max(result.depth, 1)))
        self.curves[name] = curve
        self.header["protocol"] = evaluation.protocol
        entry = {
            "path": model.path,
            "kind": model.kind,
            "image_size": None if image_size is None else list(image_size),
            **evaluation.metrics,
            "recall_curve": [round(float(v), 6) for v in curve],
            "num_queries": result.num_queries,
            "num_queries_without_positive": result.num_without_positive,
            "num_unreadable_queries": int((~evaluation.query_valid).sum()),
            "num_unreadable_db": int((~evaluation.db_valid).sum()),
            "seconds": {**evaluation.seconds, "total": time.perf_counter() - started},
        }
        self.models[name] = entry
        self.rows.append({"model": name, "image_size": image_size, **evaluation.metrics})
        return entry

    def add_sequence_matching(self, name: str, image_size, length: int, metrics: dict) -> None:
        self.models[name]["sequence_matching"] = {"length": length, **metrics}
        self.rows.append({"model": f"{name} seq{length}", "image_size": image_size, **metrics})

    def add_conditions(self, name: str, result, query_attributes: dict) -> None:
        """Recall@N per query condition (day / night, season, ...) of one model."""
        breakdown = recall_by_condition(result, query_attributes)
        self.models[name]["by_condition"] = breakdown
        self.condition_rows += [
            {"model": f"{name} {condition}={value}", "dims": cell["num_queries"], **cell}
            for condition, cells in breakdown.items()
            for value, cell in cells.items()
        ]

    def add_pca_sweep(self, name: str, pca_results: dict, fitted_on: str) -> None:
        self.models[name]["pca_sweep"] = {
            "fitted_on": fitted_on,
            **{str(dim): r.metrics() for dim, r in pca_results.items()},
        }
        self.pca_rows += [
            {"model": name, "dims": dim, **r.metrics()} for dim, r in pca_results.items()
        ]

    def to_json(self) -> dict:
        return {**self.header, "models": self.models}

    def write(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    def tables(self, pca_fitted_on: str) -> str:
        """The printed summary: Recall@N per model, per condition and per PCA size."""
        columns = [f"recall@{n}" for n in RECALL_NS]
        index, protocol = self.header["index"], self.header.get("protocol", "standard")
        parts = [
            f"\nRecall@N on {self.header['dataset_name']} ({protocol} protocol, {index} index), in %:",
            format_table(self.rows, columns),
        ]
        if self.condition_rows:
            parts += ["\nRecall@N per query condition, in %:",
                      format_table(self.condition_rows, columns, second="queries")]  # fmt: skip
        if self.pca_rows:
            parts += [f"\nRecall@N per PCA-whitened descriptor size (PCA fitted on {pca_fitted_on}), in %:",
                      format_table(self.pca_rows, columns, second="dims")]  # fmt: skip
        without = [m["num_queries_without_positive"] for m in self.models.values()]
        if any(without):
            parts.append(
                f"Note: {max(without)} of {self.header['num_queries']} queries have no database "
                "image within the positive radius and count as failures."
            )
        return "\n".join(parts)


@dataclasses.dataclass
class MapReport:
    """metrics.json's content and the printed table of a mAP benchmark (Oxford, Paris, Holidays).

    Attributes:
        header: the dataset (the top-level keys of metrics.json).
        models: per model name, its entry (path, kind, image size and the mAP result).
        rows: the rows of the printed table.
    """

    header: dict
    models: dict = dataclasses.field(default_factory=dict)
    rows: list = dataclasses.field(default_factory=list)

    @classmethod
    def for_benchmark(cls, benchmark, source: str):
        """An empty report of `benchmark` (a `RetrievalBenchmark` read from `source`)."""
        return cls({"dataset": source, "dataset_name": benchmark.name})

    def add_model(self, name: str, model, image_size, result: dict) -> None:
        """Adds one model's mAP result (`evaluate_benchmark`'s)."""
        self.models[name] = {
            "path": model.path,
            "kind": model.kind,
            "image_size": None if image_size is None else list(image_size),
            **result,
        }
        self.rows.append({"model": name, "image_size": image_size, "map": result["map"]})

    def to_json(self) -> dict:
        return {**self.header, "models": self.models}

    def write(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    def table(self) -> str:
        return f"mAP on {self.header['dataset_name']}, in %:\n" + format_table(self.rows, ["map"])


def unique_model_names(models) -> list[str]:
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
