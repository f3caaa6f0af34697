"""Sequence matching against a loop written from its definition, and what it buys on a route."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.evaluation.recall import evaluate_retrieval
from sare_tf.evaluation.sequence_matching import (
    evaluate_sequence_matching,
    sequence_ranking,
    sequence_scores,
)


def _loop_scores(xq, xb, length):
    half = length // 2
    scores = np.zeros((len(xq), len(xb)))
    for i in range(len(xq)):
        for j in range(len(xb)):
            values = [float(xq[i + k] @ xb[j + k]) for k in range(-half, half + 1)
                      if 0 <= i + k < len(xq) and 0 <= j + k < len(xb)]  # fmt: skip
            scores[i, j] = sum(values) / len(values)
    return scores


def _route(num_frames=40, dim=16, noise=1.2, seed=0):
    rng = np.random.default_rng(seed)
    places = rng.normal(size=(num_frames, dim))
    db = places + rng.normal(0, 0.3, places.shape)
    queries = places + rng.normal(0, noise, places.shape)  # another season: much noisier
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(queries), unit(db)


def test_scores_equal_the_definition_and_rank_in_blocks():
    xq, xb = _route(num_frames=13, dim=6)
    for length in (1, 3, 5):
        np.testing.assert_allclose(
            sequence_scores(xq, xb, length), _loop_scores(xq, xb, length), atol=1e-5
        )
    whole = sequence_ranking(xq, xb, 5, depth=13, block=100)
    blocked = sequence_ranking(xq, xb, 5, depth=13, block=4)
    np.testing.assert_array_equal(whole, blocked)
    with pytest.raises(ValueError, match="odd number"):
        sequence_scores(xq, xb, 4)


def test_sequences_recover_frames_single_frames_miss():
    xq, xb = _route()
    positions = np.stack([np.arange(40.0), np.zeros(40)], axis=1)
    single = evaluate_retrieval(xq, xb, positions, positions, ns=(1,), dist_thr=0.5)
    sequence = evaluate_sequence_matching(xq, xb, positions, positions, 9, ns=(1,), dist_thr=0.5)
    assert single.recalls[1] == pytest.approx(0.65) and sequence.recalls[1] == 1.0
    one = evaluate_sequence_matching(xq, xb, positions, positions, 1, ns=(1,), dist_thr=0.5)
    assert one.recalls[1] == pytest.approx(single.recalls[1])  # length 1 is single-frame matching
