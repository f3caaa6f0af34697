"""Refresh policies of the mining callback: which queries a refresh re-mines, against what.

A policy is a small object with one job (pytorch-metric-learning's miners are the model): the
callback (`sare_tf.mining.HardNegativeMining`) owns the schedule, the encoder and the state;
the policy picks the queries and the database images they are mined against.
"""

from __future__ import annotations

import numpy as np

from sare_tf.mining.hard_negatives import NO_INDEX, mine_tuples


class RefreshPolicy:
    """Base class: `mine(mining, before) -> (query_ids, (positive_idx, negative_idx, valid))`.

    Attributes:
        name: how the refresh is recorded ("full", "partial").
    """

    name = "base"

    def mine(self, mining, before):  # pragma: no cover - interface
        raise NotImplementedError


class FullRefresh(RefreshPolicy):
    """Every training query against the whole database (the paper's recipe)."""

    name = "full"

    def mine(self, mining, before):
        data = mining.dataset
        # Queries in float16 halve the largest array (32768-d: 7,416 x 64 KB); the database
        # stays float32 (mine_tuples reads its rows in place).
        query_desc, query_ok = mining.encode(data.query_image_paths(), np.float16, "queries")
        db_desc, db_ok = mining.encode(data.db_image_paths(), np.float32, "database")
        indices, valid = before
        cache = np.where(valid[:, None], indices[:, 1:], NO_INDEX)
        positive_idx, negative_idx, mined_valid = mine_tuples(
            query_desc,
            db_desc,
            mining.train_positives,
            mining.non_negatives,
            num_negatives=mining.num_negatives,
            num_candidates=min(mining.num_candidates, data.num_db),
            negative_cache=cache,
            seed=mining.refresh_seed(),
            db_usable=db_ok,
            verbose=bool(mining.verbose),
        )
        query_ids = np.arange(data.num_queries)
        return query_ids, (positive_idx, negative_idx, mined_valid & query_ok)


class PartialRefresh(RefreshPolicy):
    """Only the queries the pipeline serves next, against a shared random database subset.

    Each refresh re-mines the `refresh_every` queries the tuple pipeline serves next
    (`TuplePipeline.queries_served`): it encodes those queries, their training positives, their
    current negatives and `db_size` random database images shared by the chunk, whose images
    outside a query's 25 m are all its candidates. About `Q / refresh_every` times cheaper per
    refresh than `FullRefresh`.

    Args:
        db_size: database images encoded per refresh (None: the callback's `num_candidates`).
    """

    name = "partial"

    def __init__(self, db_size: int | None = None):
        if db_size is not None and (not isinstance(db_size, int) or db_size < 1):
            raise ValueError(f"`db_size` must be a positive integer. Received: db_size={db_size!r}")
        self.db_size = db_size

    def mine(self, mining, before):
        data = mining.dataset
        query_ids = mining.pipeline.queries_served(
            mining.first_pass, mining.batches_seen, mining.refresh_every
        )
        indices, valid = before
        rng = np.random.default_rng(mining.refresh_seed())
        positives = [mining.train_positives[i] for i in query_ids]
        cache = np.where(valid[query_ids, None], indices[query_ids, 1:], NO_INDEX)
        db_size = min(self.db_size or mining.num_candidates, data.num_db)
        shared = rng.choice(data.num_db, db_size, replace=False)
        db_ids = np.unique(np.concatenate([shared, *positives, cache[cache != NO_INDEX]]))
        local = np.full(data.num_db, NO_INDEX, dtype=np.int64)
        local[db_ids] = np.arange(len(db_ids))

        all_queries, all_db = data.query_image_paths(), data.db_image_paths()
        query_desc, query_ok = mining.encode(
            [all_queries[i] for i in query_ids], np.float32, "queries"
        )
        db_desc, db_ok = mining.encode([all_db[i] for i in db_ids], np.float32, "database subset")

        def to_local(ids):
            mapped = local[ids]
            return mapped[mapped != NO_INDEX]

        positive_idx, negative_idx, mined_valid = mine_tuples(
            query_desc,
            db_desc,
            [to_local(p) for p in positives],
            [to_local(mining.non_negatives[i]) for i in query_ids],
            num_negatives=mining.num_negatives,
            # Every subset image outside the query's 25 m is a candidate: the random part of
            # the subset is already the random sample.
            num_candidates=len(db_ids),
            negative_cache=np.where(cache == NO_INDEX, NO_INDEX, local[np.maximum(cache, 0)]),
            seed=mining.refresh_seed(),
            db_usable=db_ok,
        )
        positive_idx = np.where(positive_idx == NO_INDEX, NO_INDEX, db_ids[positive_idx])
        negative_idx = np.where(negative_idx == NO_INDEX, NO_INDEX, db_ids[negative_idx])
        return query_ids, (positive_idx, negative_idx, mined_valid & query_ok)


POLICIES = {"full": FullRefresh, "partial": PartialRefresh}


def get_policy(policy) -> RefreshPolicy:
    """A `RefreshPolicy` from a name ("full", "partial") or an instance."""
    if isinstance(policy, RefreshPolicy):
        return policy
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown mining mode. Expected one of {tuple(POLICIES)} or a RefreshPolicy. "
            f"Received: mode={policy!r}"
        )
    return POLICIES[policy]()
