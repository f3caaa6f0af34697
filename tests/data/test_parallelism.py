"""The tf.data pipelines run with fixed parallelism and no autotuning (an autotuned iterator
stalls when dropped: `sare_tf.data.parallelism`); every pipeline the library builds says so in
its options, and the settings refuse AUTOTUNE with a message naming the value."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from sare_tf import cluster_init, encoding
from sare_tf.data import GeoDataset
from sare_tf.data.image_batches import labelled_image_dataset
from sare_tf.data.parallelism import decoders
from sare_tf.hardware import usable_cores
from sare_tf.data.tuples import MiningState, TuplePipeline


def _parallel_map_calls(dataset: tf.data.Dataset) -> list[int]:
    """The `num_parallel_calls` of every parallel map in the dataset's graph."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    nodes = {node.name: node for node in graph.node}

    def constant(name):
        return int(tf.make_ndarray(nodes[name.split(":")[0]].attr["value"].tensor))

    return [constant(node.input[-1]) for node in graph.node if node.op == "ParallelMapDatasetV2"]


def test_every_pipeline_decodes_on_the_usable_cores_without_autotuning(tiny_city):
    train = GeoDataset.from_dbstruct(tiny_city["train"])
    tuples = TuplePipeline(train, MiningState(train.num_queries, 2), (32, 32)).tf_dataset()
    datasets = {
        "tuples": tuples.repeat(),  # as training uses it
        "labelled images": labelled_image_dataset(
            train.db_image_paths(), [0] * train.num_db, (32, 32)
        ),
        "cluster init": cluster_init._image_batches(train.db_image_paths(), (32, 32), 4, None),
        "encode": encoding._make_dataset(train.db_image_paths(), (32, 32), None, None, decoders()),
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == cores
    for name, dataset in datasets.items():
        assert dataset.options().autotune.enabled is False, name
        assert _parallel_map_calls(dataset) == [cores], name


def test_autotune_and_nonsense_settings_are_refused(tiny_city):
    assert decoders(3) == 3
    with pytest.raises(ValueError, match=r"do not autotune\)\. Received: num_parallel_calls=-1"):
        decoders(tf.data.AUTOTUNE)
    train = GeoDataset.from_dbstruct(tiny_city["train"])
    state = MiningState(train.num_queries, 2)
    with pytest.raises(ValueError, match="num_parallel_calls=0"):
        TuplePipeline(train, state, (32, 32), num_parallel_calls=0)
    with pytest.raises(ValueError, match="prefetch=-1"):
        TuplePipeline(train, state, (32, 32), prefetch=tf.data.AUTOTUNE)
    pipeline = TuplePipeline(train, state, (32, 32), num_parallel_calls=1, prefetch=3)
    assert _parallel_map_calls(pipeline.tf_dataset()) == [1]
