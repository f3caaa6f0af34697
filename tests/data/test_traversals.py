"""Frame-aligned traversals (Nordland-style): one folder per traversal, frame i = place i."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.data import GeoDataset
from sare_tf.data.traversals import read_traversals
from sare_tf.evaluation.recall import evaluate_retrieval


def _traversal(folder, count, jpeg_writer, start=1, ext="jpg"):
    folder.mkdir(parents=True)
    for i in range(start, start + count):
        jpeg_writer(folder / f"{i:05d}.{ext}", 24, 32, seed=i)


def test_frames_align_by_name_and_the_tolerance_is_in_frames(tmp_path, jpeg_writer):
    _traversal(tmp_path / "nordland" / "summer", 12, jpeg_writer)
    _traversal(tmp_path / "nordland" / "winter", 12, jpeg_writer)
    ds = GeoDataset.load(tmp_path / "nordland")
    assert ds.name == "nordland_summer_winter" and ds.num_db == ds.num_queries == 12
    assert ds.db_paths[0] == "summer/00001.jpg" and ds.query_paths[0] == "winter/00001.jpg"
    assert "+-2 frames" in ds.frame
    assert ds.positives()[5].tolist() == [5, 4, 6, 3, 7]  # frames 4..8 (ids 3..7), nearest first
    assert ds.train_positives()[5].tolist() == [5, 4, 6]
    strict = read_traversals(tmp_path / "nordland", tolerance_frames=0)
    assert strict.positives()[5].tolist() == [5]
    # A retrieval 2 frames off is right at tolerance 2 and wrong at tolerance 1.
    eye = np.eye(12)
    shifted = np.roll(eye, 2, axis=1)  # query i is most similar to db frame i + 2
    for tolerance, expected in ((2, 10 / 12), (1, 0.0)):
        ds_t = read_traversals(tmp_path / "nordland", tolerance_frames=tolerance)
        result = evaluate_retrieval(shifted, eye, ds_t.query_utm, ds_t.db_utm, ns=(1,),
                                    dist_thr=ds_t.pos_dist_thr)  # fmt: skip
        assert result.recalls[1] == pytest.approx(expected)


def test_misaligned_or_ambiguous_traversals_are_refused(tmp_path, jpeg_writer):
    _traversal(tmp_path / "route" / "fall", 5, jpeg_writer)
    _traversal(tmp_path / "route" / "spring", 6, jpeg_writer)
    with pytest.raises(ValueError, match=r"1 only in spring \(first \['00006.jpg'\]\)"):
        GeoDataset.load(tmp_path / "route")
    with pytest.raises(ValueError, match="aligning by index needs the same number"):
        read_traversals(tmp_path / "route", align="index")
    _traversal(tmp_path / "route" / "winter", 5, jpeg_writer)
    with pytest.raises(ValueError, match="holds 3 traversal folders"):
        read_traversals(tmp_path / "route")
    chosen = GeoDataset.load(f"{tmp_path / 'route'}:winter,fall")
    assert chosen.db_paths[0] == "winter/00001.jpg" and chosen.num_queries == 5
    with pytest.raises(ValueError, match="no traversal folder 'summer'"):
        read_traversals(tmp_path / "route", "summer", "fall")
    with pytest.raises(ValueError, match="tolerance_frames"):
        read_traversals(tmp_path / "route", "fall", "winter", tolerance_frames=-1)


def test_evaluate_ranks_by_sequences_on_traversals(tmp_path, jpeg_writer, tiny_model, capsys):
    import json

    from sare_tf.cli import main

    _traversal(tmp_path / "route" / "summer", 10, jpeg_writer)
    _traversal(tmp_path / "route" / "winter", 10, jpeg_writer)
    keras_path = tmp_path / "tiny.keras"
    tiny_model.save(keras_path)
    argv = ["evaluate", "--model", str(keras_path), "--dataset", str(tmp_path / "route"),
            "--image-size", "24", "32", "--sequence-length", "3", "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["models"]["tiny"]["sequence_matching"]["length"] == 3
    assert "tiny seq3" in capsys.readouterr().out
    (tmp_path / "flat.csv").write_text("path,utm_east,utm_north,split\nsummer/00001.jpg,0,0,db\n"
                                       "summer/00002.jpg,100,0,db\nwinter/00001.jpg,1,0,query\n")  # fmt: skip
    argv[4] = str(tmp_path / "flat.csv")
    assert main([*argv, "--image-root", str(tmp_path / "route")]) != 0
    assert "needs frame-aligned traversals" in capsys.readouterr().err
