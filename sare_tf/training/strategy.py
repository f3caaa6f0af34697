"""Which `tf.distribute` strategy a run uses, and which worker of it this process is."""

from __future__ import annotations

import tensorflow as tf


def make_strategy(name: str):
    """The `tf.distribute` strategy for "none", "mirrored" or "multiworker".

    "mirrored" replicates over every local GPU, or, without GPUs, over every logical CPU
    device (one unless `tf.config.set_logical_device_configuration` split the CPU, as the
    tests do). "multiworker" reads the cluster from the `TF_CONFIG` environment variable.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"Unknown strategy. Expected 'none', 'mirrored' or 'multiworker'. Received: {name!r}"
    )


def is_chief(strategy) -> bool:
    """True on the worker that writes files (every single-worker strategy; task 0 / chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def is_multiworker(strategy) -> bool:
    """True when `strategy` spans more than one worker (MultiWorkerMirroredStrategy + TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


def worker_id(strategy) -> int | None:
    """This worker's task id on a non-chief worker, None on the chief (or a single worker)."""
    return None if is_chief(strategy) else int(strategy.cluster_resolver.task_id)
