"""Where a place-embedding model's forward time goes, stage by stage.

Each stage of a `PlaceEmbedding` (preprocessing, the backbone, then the head: the cast of the
feature map to float32, and for NetVLAD its per-location normalisation, soft assignment,
residual aggregation and output normalisations; any other aggregator as one stage; whitening) is
compiled as its own `tf.function` and timed on the tensor the previous stage really produced,
the best of a few rounds. The stages add up to about the whole model (the model's own graph is
timed too): the difference is what running them as one graph saves or costs.

"The head" is everything after the backbone: its share of the summed stage times is what the
design bounds (a few percent at 480x640), measured directly instead of as the difference of two
separately timed models, which is noisy on a shared machine.

TensorFlow is imported inside the functions that time, as everywhere in `sare_tf.bench`, so
that the parent process of a benchmark can print a profile without loading it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Stages before the head; every other stage belongs to it.
BODY_STAGES = ("preprocess", "backbone")


def model_stages(model) -> list[tuple[str, Callable]]:
    """`(name, function)` of each stage of `model`, in order; each takes the previous output.

    Args:
        model: a `sare_tf.model.PlaceEmbedding`.
    """
    import keras
    from keras import ops

    from sare_tf.layers.netvlad import (
        NetVLAD,
        l2_normalize,
        normalize_vlad,
        soft_assign,
        vlad_residuals,
    )

    backbone = keras.Model(model.preprocessing.output, model.aggregator.input)
    aggregator = model.aggregator
    stages = [
        ("preprocess", lambda x: model.preprocessing(x)),
        ("backbone", lambda x: backbone(x, training=False)),
        ("cast to float32", lambda x: ops.cast(x, "float32")),
    ]
    if type(aggregator) is NetVLAD:
        kernel, centroids, bias = (
            aggregator.assignment_kernel,
            aggregator.centroids,
            aggregator.bias,
        )
        stages += [
            ("netvlad: normalise locations", lambda x: l2_normalize(x, axis=-1)),
            ("netvlad: soft assignment", lambda x: (x, soft_assign(x, kernel, bias))),
            ("netvlad: residual sums", lambda xa: vlad_residuals(xa[0], xa[1], centroids)),
            ("netvlad: normalisations", normalize_vlad),
        ]
    else:
        stages.append((f"aggregator ({aggregator.name})", lambda x: aggregator(x)))
    if model.whitening is not None:
        stages.append(("whitening", lambda x: model.whitening(x)))
    return stages


def _best_seconds(function, value, rounds: int, repeats: int) -> float:
    """Best over `rounds` of the mean time of `repeats` calls (after one warm-up call)."""
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), function(value))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            out = function(value)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def profile_stages(model, images, rounds: int = 2, repeats: int = 2) -> dict:
    """Times each stage of `model` on `images` and the whole model on the same batch.

    Args:
        model: a `sare_tf.model.PlaceEmbedding`.
        images: `[B, H, W, 3]` float32 RGB 0-255 (a tensor or array).
        rounds: timed rounds per stage; the best is kept.
        repeats: calls per round.

    Returns:
        `{"stages": [{"stage", "ms_per_image", "share"}], "whole_ms_per_image",
        "stages_ms_per_image", "head_ms_per_image", "head_share"}`; shares are of the summed
        stage times.
    """
    import tensorflow as tf

    batch = int(images.shape[0])
    value = tf.convert_to_tensor(images)
    rows = []
    for name, function in model_stages(model):
        compiled = tf.function(function, jit_compile=False)
        seconds = _best_seconds(compiled, value, rounds, repeats)
        rows.append({"stage": name, "ms_per_image": 1000 * seconds / batch})
        value = compiled(value)
    whole = tf.function(lambda x: model(x, training=False), jit_compile=False)
    whole_ms = 1000 * _best_seconds(whole, tf.convert_to_tensor(images), rounds, repeats) / batch
    total = sum(row["ms_per_image"] for row in rows)
    head = sum(row["ms_per_image"] for row in rows if row["stage"] not in BODY_STAGES)
    for row in rows:
        row["share"] = row["ms_per_image"] / total
    return {
        "stages": rows,
        "whole_ms_per_image": whole_ms,
        "stages_ms_per_image": total,
        "head_ms_per_image": head,
        "head_share": head / total,
    }


def describe_profile(profile: dict) -> list[str]:
    """Printable lines of a `profile_stages` result."""
    lines = [f"    {'stage':32} {'ms/image':>9} {'share':>7}"]
    for row in profile["stages"]:
        lines.append(f"    {row['stage']:32} {row['ms_per_image']:9.2f} {100 * row['share']:6.2f}%")
    lines.append(
        f"    head (after the backbone): {profile['head_ms_per_image']:.2f} ms/image = "
        f"{100 * profile['head_share']:.2f}% of the stages' {profile['stages_ms_per_image']:.1f} "
        f"ms; the whole model as one graph: {profile['whole_ms_per_image']:.1f} ms/image"
    )
    return lines
