"""Messages a command-line user can act on: CLI flags, not Python parameters; paths that exist
are recognised for what they are; models told apart by their folders."""

from __future__ import annotations

import os

import pytest

from sare_tf.artifacts import store_image_size


def test_export_given_a_savedmodel_or_a_run_folder_points_at_the_keras_file(tmp_path, capsys):
    import keras

    from sare_tf import cli
    from sare_tf.export import export_versioned
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(0)
    model = build_embedding_model("tiny", num_clusters=4)
    store_image_size(model, (48, 64))
    exported = export_versioned(model, tmp_path / "saved_models", "city")
    assert cli.main(["export", "--model", exported.saved_model_dir, "--name", "again"]) == 2
    err = capsys.readouterr().err
    assert "is a SavedModel (an export)" in err and "Model file not found" not in err
    assert f"Found one: {exported.saved_model_dir}.keras" in err
    run = tmp_path / "runs" / "train"
    os.makedirs(run)
    model.save(run / "best.keras")
    assert cli.main(["export", "--model", str(run), "--name", "again"]) == 2
    assert f"Found one: {run / 'best.keras'}" in capsys.readouterr().err


def test_messages_name_flags_a_cli_user_can_pass(tmp_path, capsys):
    from sare_tf import cli
    from sare_tf.data import GeoDataset

    csv = tmp_path / "city.csv"
    csv.write_text("path,lat,lon\nimages/a.jpg,40.44,-79.95\n")
    with pytest.raises(ValueError) as caught:
        GeoDataset.load(str(csv))
    assert "query_csv" not in str(caught.value) and "'split'" in str(caught.value)
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    assert cli.main(["export", "--model", str(model), "--name", "bad name"]) == 2
    err = capsys.readouterr().err
    assert "(--name)" in err or "not a valid .keras" in err  # checked in either order
    from sare_tf.artifacts.versions import check_name

    with pytest.raises(ValueError, match=r"--name"):
        check_name("bad name")


def test_one_flag_vocabulary_index_is_a_folder_and_the_faiss_kind_is_index_type(capsys):
    from sare_tf.cli import build_parser
    from sare_tf.commands._index_flags import index_config

    parser = build_parser()
    args = parser.parse_args(["evaluate", "--model", "m.keras", "--dataset", "d.mat",
                              "--index-type", "ivfpq", "--pq-m", "8", "--nprobe", "4"])  # fmt: skip
    config = index_config(args)
    assert (config.kind, config.m, config.nprobe) == ("ivfpq", 8, 4)
    assert config.settings() == {"nlist": None, "m": 8, "nbits": 8, "nprobe": 4,
                                 "refine_factor": 0, "opq": False}  # fmt: skip
    # The former spelling still works, with a warning; a folder there is explained.
    args = parser.parse_args(["index", "build", "--model", "m.keras", "--dataset", "d.mat",
                              "--out", "idx", "--index", "hnsw"])  # fmt: skip
    assert index_config(args).kind == "hnsw"
    assert "--index hnsw is now --index-type hnsw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--model", "m.keras", "--dataset", "d.mat",
                           "--index", "runs/places"])  # fmt: skip
    error = capsys.readouterr().err
    assert "--index is a place index folder in `localize` and `serve`" in error
    assert "--index-type, one of flat, ivfpq, hnsw. Received: --index runs/places" in error
    # Outputs are --out everywhere (query-server's --output kept as its former name).
    args = parser.parse_args(
        ["query-server", "http://localhost:8501", "p.jpg", "--output", "q.npy"]
    )
    assert args.out == "q.npy"
    # Neighbours are --top-k everywhere (query-server's --top kept as its former name).
    args = parser.parse_args(["query-server", "http://localhost:8501", "p.jpg", "--top", "3"])
    assert args.top_k == 3
    args = parser.parse_args(["localize", "p.jpg", "--index", "idx", "--top-k", "4"])
    assert args.top_k == 4
