"""Training under `tf.distribute.MultiWorkerMirroredStrategy`: Keras 3 work-arounds, and
keeping the workers in step.

Keras 3.15's TensorFlow trainer fails with MultiWorkerMirroredStrategy in two places
(keras-team/keras#20585, tensorflow/tensorflow#72388); `prepare_multiworker_fit` works around
both without changing what is computed:

1. Before the first step, `fit` reads one distributed batch and averages it across workers
   with `strategy.reduce("MEAN", (x, y))`, only to learn the input shapes for building the
   model; the multi-worker strategy cannot reduce a tuple ("Attempt to convert a value
   (PerReplica ...) to a Tensor"). The shapes and dtypes are taken from the dataset's
   `element_spec` instead, without reading data.
2. After each step, every log is reduced with `strategy.reduce("MEAN", value, axis=0)`, which
   fails on the scalar logs `train_step` returns ("Invalid reduction dimension 0 for input
   with 0 dimensions"). The logs are returned with shape `[1]` instead. Keras metrics are
   already global (their variables are updated with a sum over all replicas of all
   workers), so every replica holds the same value and their mean is that value.

Every worker runs the whole program on its own copy of the variables; only what happens in a
training step is synchronised. `broadcast_from_chief` and `values_of_all_workers` cover what
happens outside (initial values set by each worker, resuming from each worker's backup).
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf


def prepare_multiworker_fit(model, element_spec) -> None:
    """Lets `model.fit` run under MultiWorkerMirroredStrategy (Keras 3 work-arounds).

    Call it on every worker before `model.fit(dataset)`, for a model created and compiled
    in the strategy's scope.

    Args:
        model: the compiled Keras model (TensorFlow backend).
        element_spec: the training dataset's `element_spec` (e.g. `(TensorSpec, TensorSpec)`
            for `(x, y)` batches); only shapes and dtypes are used.
    """

    train_step = model.train_step

    def symbolic_build(self, iterator=None, data_batch=None):
        # Instead of peeking at a batch and reducing it across workers: the spec's shapes.
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=element_spec)

    def train_step_with_vector_logs(self, data):
        logs = train_step(data)
        return keras.tree.map_structure(
            lambda value: keras.ops.reshape(value, (1,)) if len(value.shape) == 0 else value,
            logs,
        )

    model._maybe_symbolic_build = types.MethodType(symbolic_build, model)
    model.train_step = types.MethodType(train_step_with_vector_logs, model)


def broadcast_from_chief(strategy, variables) -> None:
    """Gives `variables` the chief's values on every worker (one all-reduce per dtype).

    Values set outside a training step (NetVLAD cluster initialisation, a loaded model) are
    assigned by each worker on its own copy. They agree only if every worker computed them
    bit for bit alike, which hosts with different CPUs (or library builds) do not promise;
    weights that differ would then stay different for the whole run, since every worker
    applies the same all-reduced update to its own copy.

    Args:
        strategy: the MultiWorkerMirroredStrategy the variables were created under.
        variables: the variables (Keras or TensorFlow) to synchronise, the same list in the
            same order on every worker.
    """

    variables = list(variables)
    by_dtype: dict = {}
    for variable in variables:
        by_dtype.setdefault(tf.as_dtype(variable.dtype), []).append(variable)
    for group in by_dtype.values():

        def chief_or_zeros(group=group):
            packed = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in group], 0)
            is_first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
            return tf.where(is_first, packed, tf.zeros_like(packed))

        # Replica 0 (the chief's first device) contributes its values, the others zeros.
        per_replica = tf.function(lambda fn=chief_or_zeros: strategy.run(fn))()
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        sizes = [int(tf.size(tf.convert_to_tensor(v))) for v in group]
        for variable, part in zip(group, tf.split(total, sizes), strict=True):
            variable.assign(tf.reshape(part, variable.shape))


def values_of_all_workers(strategy, values) -> list[tuple[int, ...]]:
    """The integers `values` of every replica of every worker (a collective: call it on all).

    Args:
        strategy: the MultiWorkerMirroredStrategy.
        values: a sequence of integers, the same length on every worker.

    Returns:
        One tuple of the integers per replica.
    """

    row = [int(v) for v in values]

    def this_replica():
        return tf.constant([row], tf.int64)

    local = tf.function(lambda: strategy.run(this_replica))()
    return [tuple(int(v) for v in r) for r in strategy.gather(local, axis=0).numpy()]


def check_same_backup_position(strategy, position: tuple[int, int], backup_dir: str) -> None:
    """Stops every worker with the same error unless all resume from the same point.

    Each worker resumes from its own backup (the chief's in `out/backup`, the others' in
    `out/worker_<id>/backup`), written at the same steps. A run killed while one worker was
    writing leaves that worker with its previous backup (or none): resuming from different
    points would give the workers different weights, or different numbers of steps, and the
    first to finish would leave the others waiting for it forever.

    Args:
        strategy: the MultiWorkerMirroredStrategy (this is a collective: all workers call it).
        position: this worker's backup `(epoch, batch)`, `(-1, -1)` without a backup.
        backup_dir: this worker's backup folder, for the message.
    """
    positions = values_of_all_workers(strategy, position)
    if len(set(positions)) > 1:
        described = ", ".join(
            "none" if p[0] < 0 else f"epoch {p[0]} batch {p[1]}" for p in positions
        )
        raise ValueError(
            "The workers cannot resume together: their backups are at different points "
            f"(one per replica: {described}; this worker's is {backup_dir}). "
            "Delete every worker's backup folder to start the run over."
        )
