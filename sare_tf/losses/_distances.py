"""Shared pieces of every tuple loss: dtype promotion, splitting `[B, 2+N, D]`, distances."""

from __future__ import annotations

import keras
from keras import ops

# Below this squared distance (|x| < 1e-6) a plain distance is taken as exactly 0; see `safe_norm`.
NORM_EPSILON = 1e-12


def to_compute_dtype(y_pred):
    """Converts `y_pred` to the dtype the loss maths runs in.

    float64 stays float64 (the gradient tests check closed forms at 1e-6); every other
    dtype, in particular bfloat16 and float16 from mixed precision, becomes float32: the
    exponentials and log-sum-exps of the losses lose too much in half precision.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if keras.backend.standardize_dtype(y_pred.dtype) == "float64":
        return y_pred
    return ops.cast(y_pred, "float32")


def split_tuples(y_pred):
    """Splits `[B, 2+N, D]` embeddings into query `[B, D]`, positive `[B, D]`, negatives `[B, N, D]`.

    Args:
        y_pred: embeddings of the tuples, in the order query, positive, N >= 1 negatives.

    Returns:
        `(query, positive, negatives)`, in the dtype of `y_pred`.
    """
    shape = tuple(y_pred.shape)
    if len(shape) != 3:
        raise ValueError(
            "Tuple losses expect y_pred of shape [batch, 2 + num_negatives, dim] (query, positive, "
            f"negatives). Received: y_pred.shape={shape}"
        )
    if shape[1] is not None and shape[1] < 3:
        raise ValueError(
            "Tuple losses need a query, a positive and at least one negative per tuple, i.e. "
            f"y_pred.shape[1] >= 3. Received: y_pred.shape={shape}"
        )
    return y_pred[:, 0, :], y_pred[:, 1, :], y_pred[:, 2:, :]


def tuple_squared_distances(y_pred):
    """Squared Euclidean distances of each tuple's positive and negatives to its query.

    The differences are squared and summed directly (not `|q|^2 + |x|^2 - 2 q.x`), so the
    result is never negative and exactly 0 for identical embeddings.

    Args:
        y_pred: `[B, 2+N, D]` embeddings (query, positive, negatives).

    Returns:
        `(dp [B], dn [B, N])` with `dp = |q - p|^2` and `dn_i = |q - n_i|^2`.
    """
    query, positive, negatives = split_tuples(y_pred)
    positive_sq = ops.sum(ops.square(positive - query), axis=-1)
    negatives_sq = ops.sum(ops.square(negatives - query[:, None, :]), axis=-1)
    return positive_sq, negatives_sq


def safe_norm(squared, epsilon: float = NORM_EPSILON):
    """Plain distance `sqrt(squared)` with a finite gradient everywhere.

    `d/dx |x| = x / |x|` is undefined at `x = 0` and `sqrt`'s derivative is infinite there,
    which turns `0 * inf` into NaN for identical embeddings. Below `epsilon` the distance is
    taken as exactly 0 with zero gradient; the inner `maximum` keeps the untaken `sqrt`
    branch away from 0 so that its gradient (multiplied by 0 by `where`) stays finite.

    Args:
        squared: non-negative squared distances, any shape.
        epsilon: squared distances at or below it count as 0 (a distance error below 1e-6).

    Returns:
        Distances, same shape and dtype.
    """
    is_positive = squared > epsilon
    root = ops.sqrt(ops.maximum(squared, epsilon))
    return ops.where(is_positive, root, ops.zeros_like(squared))
