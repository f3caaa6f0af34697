"""Each query beside its top-N database images, green when right and red when wrong: the
per-query view of an evaluation (what VPR-methods-evaluation's `--num_preds_to_save` and
`--save_only_wrong_preds` give), as one PNG per query and a text file of the paths."""

# ruff: noqa: E741  (faiss naming: D, I = index.search(xq, k))
from __future__ import annotations

import os

import faiss
import numpy as np
from matplotlib.figure import Figure

from sare_tf.data.images import BadImageError, read_rgb
from sare_tf.evaluation.recall import correct_retrievals


def top_predictions(query_desc, db_desc, db_valid, n: int) -> np.ndarray:
    """`[Q, n]` database ids by descriptor similarity (exact search over readable images;
    -1 where fewer exist)."""

    readable = np.flatnonzero(np.asarray(db_valid, bool))
    index = faiss.IndexFlatIP(db_desc.shape[1])
    index.add(np.ascontiguousarray(db_desc[readable], np.float32))
    _, I = index.search(np.ascontiguousarray(query_desc, np.float32), min(n, len(readable)))
    ids = np.where(I >= 0, readable[np.maximum(I, 0)], -1)
    if ids.shape[1] < n:
        ids = np.pad(ids, ((0, 0), (0, n - ids.shape[1])), constant_values=-1)
    return ids


def _panel(axes, path: str, title: str, colour: str) -> None:

    try:
        axes.imshow(read_rgb(path, (120, 160)))
    except BadImageError:
        axes.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(5)
    axes.set_title(title, fontsize=8, color=colour)


def save_predictions(
    out_dir,
    dataset,
    query_desc,
    db_desc,
    query_valid,
    db_valid,
    n: int = 5,
    only_wrong: bool = False,
) -> dict:
    """Writes `out_dir/<query id>.png` (the query, then its top-`n` matches, bordered green when
    within the dataset's positive radius, red otherwise) and `out_dir/predictions.txt`.

    `predictions.txt` has one tab-separated line per saved query: its path, "right" or "wrong"
    (the top-1), then the `n` predicted database paths best first, each followed by 1 (right)
    or 0 (wrong).

    Args:
        only_wrong: save only the queries whose top-1 is wrong.

    Returns:
        `{"saved": count, "folder": out_dir, "text": path of predictions.txt}`.
    """

    os.makedirs(out_dir, exist_ok=True)
    queries = np.flatnonzero(np.asarray(query_valid, bool))
    ids = top_predictions(query_desc[queries], db_desc, db_valid, n)
    right = correct_retrievals(
        ids, dataset.query_utm[queries], dataset.db_utm, dataset.pos_dist_thr
    )
    query_paths, db_paths = dataset.query_image_paths(), dataset.db_image_paths()
    lines, saved = [], 0
    for row, query in enumerate(queries):
        if only_wrong and right[row, 0]:
            continue
        figure = Figure(figsize=(1.9 * (n + 1), 2.2), dpi=100, layout="constrained")
        panels = figure.subplots(1, n + 1)
        _panel(panels[0], query_paths[query], f"query {query}", "#333333")
        fields = [query_paths[query], "right" if right[row, 0] else "wrong"]
        for rank, db_id in enumerate(ids[row]):
            if db_id < 0:
                panels[rank + 1].axis("off")
                continue
            ok = bool(right[row, rank])
            _panel(panels[rank + 1], db_paths[db_id], f"#{rank + 1} {'right' if ok else 'wrong'}",
                   "#1a8f3a" if ok else "#c62828")  # fmt: skip
            fields += [db_paths[db_id], "1" if ok else "0"]
        figure.savefig(os.path.join(out_dir, f"{query:05d}.png"))
        lines.append("\t".join(fields))
        saved += 1
    text = os.path.join(out_dir, "predictions.txt")
    with open(text, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    return {"saved": saved, "folder": os.fspath(out_dir), "text": text}
