"""How sare_tf's tf.data pipelines use the CPU: a fixed number of parallel decoders and batches
ahead, with tf.data's autotuning off.

Why not AUTOTUNE: an autotuned iterator runs a model thread that re-optimises the pipeline at
a period doubling up to a minute, and dropping the iterator waits for that thread to wake (TF
2.21, measured with gdb: the main thread in `RootDataset::Iterator::~Iterator`, the model
thread in `Model::OptimizeLoop`'s timed wait). Every pipeline that ended (an epoch, a mining
refresh, an evaluation) then stalled for up to the rest of that period: 10 s after 10 s of
iterating, 30-60 s at the end of a few-minute `fit`. The pipelines here decode images in
parallel and batch them; their best settings are known without tuning: one decoder per usable
core and a small buffer ahead.
"""

from __future__ import annotations

import tensorflow as tf

from sare_tf.hardware import usable_cores

PREFETCH_BATCHES = 2


def decoders(num_parallel_calls: int | None = None) -> int:
    """Parallel calls of a decoding map: `num_parallel_calls` when given, else the usable cores.

    `tf.data.AUTOTUNE` is refused: the pipelines run without autotuning (module docstring).
    """
    if num_parallel_calls is None:
        return usable_cores()
    if int(num_parallel_calls) < 1:
        raise ValueError(
            "`num_parallel_calls` must be a number of parallel decoders >= 1 (sare_tf's "
            f"pipelines do not autotune). Received: num_parallel_calls={num_parallel_calls}"
        )
    return int(num_parallel_calls)


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning off (its maps and prefetches must have fixed sizes)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
