"""The dbStruct .mat reader and writer, on files written with scipy in the Pittsburgh / Tokyo layout."""

from __future__ import annotations

import h5py
import os

import numpy as np
import pytest
import scipy.io

from sare_tf.data import GeoDataset, write_dbstruct

DB_NAMES = [
    "000/000000_pitch1_yaw1.jpg",
    "000/000000_pitch1_yaw2.jpg",
    "001/001000_pitch2_yaw5.jpg",
]
Q_NAMES = ["queries_real/000/000001.jpg", "queries_real/000/000002.jpg"]
UTM_DB = np.array([[584874.2, 584874.2, 585001.5], [4477128.7, 4477128.7, 4477300.25]])
UTM_Q = np.array([[584880.0, 585010.0], [4477130.0, 4477310.0]])


def _cell(strings):
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _pitts_fields(**changes):
    """The exact Pittsburgh dbStruct layout, written independently of the library's writer."""
    fields = {
        "whichSet": "train",
        "dbImageFns": _cell(DB_NAMES),
        "utmDb": UTM_DB,
        "qImageFns": _cell(Q_NAMES),
        "utmQ": UTM_Q,
        "numImages": 3.0,
        "numQueries": 2.0,
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize("compressed", [False, True], ids=["v5", "v7-compressed"])
def test_pittsburgh_layout_loads(tmp_path, compressed):
    path = tmp_path / "pitts30k_train.mat"
    scipy.io.savemat(path, {"dbStruct": _pitts_fields()}, do_compression=compressed)
    ds = GeoDataset.from_dbstruct(path, image_root="/data/pitts")
    assert ds.name == "pitts30k_train"
    assert ds.num_db == 3 and ds.num_queries == 2
    assert ds.db_paths == DB_NAMES and ds.query_paths == Q_NAMES
    np.testing.assert_array_equal(ds.db_utm, UTM_DB.T)
    np.testing.assert_array_equal(ds.query_utm, UTM_Q.T)
    assert ds.pos_dist_thr == 25.0 and ds.nontriv_pos_dist_thr == 10.0
    assert ds.image_root == "/data/pitts"
    assert ds.db_time_stamps is None
    # Ground truth on the read coordinates: query 0 is ~6 m from db 0 and 1.
    assert ds.train_positives()[0].tolist() == [0, 1]
    assert ds.positives()[1].tolist() == [2]


def test_default_image_root_is_the_file_folder(tmp_path):
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"dbStruct": _pitts_fields()})
    assert GeoDataset.load(path).image_root == str(tmp_path)


def test_tokyo_layout_fields_read_by_name_and_time_stamps_kept(tmp_path):
    fields = _pitts_fields(whichSet="val")
    # TokyoTM order: time stamps inserted after each UTM matrix; read by name, not position.
    tokyo = {
        "whichSet": fields["whichSet"],
        "dbImageFns": fields["dbImageFns"],
        "utmDb": fields["utmDb"],
        "dbTimeStamp": np.array([[201107, 201107, 201304]]),
        "qImageFns": fields["qImageFns"],
        "utmQ": fields["utmQ"],
        "qTimeStamp": np.array([[201401, 201402]]),
    }
    tokyo.update({k: fields[k] for k in list(fields)[5:]})
    path = tmp_path / "tokyoTM_val.mat"
    scipy.io.savemat(path, {"dbStruct": tokyo})
    ds = GeoDataset.from_dbstruct(path, image_root=tmp_path)
    assert ds.db_paths == DB_NAMES
    np.testing.assert_array_equal(ds.db_utm, UTM_DB.T)
    assert ds.db_time_stamps.tolist() == [201107, 201107, 201304]
    assert ds.query_time_stamps.tolist() == [201401, 201402]


def test_writer_round_trip_and_raw_layout(tmp_path):
    ds = GeoDataset(DB_NAMES, UTM_DB.T, Q_NAMES, UTM_Q.T, name="w", query_time_stamps=[7, 8])
    path = write_dbstruct(tmp_path / "w.mat", ds, "test")
    raw = scipy.io.loadmat(path)["dbStruct"][0, 0]
    assert raw["whichSet"][0] == "test"
    assert raw["dbImageFns"].shape == (3, 1) and raw["dbImageFns"][2, 0][0] == DB_NAMES[2]
    assert raw["utmDb"].shape == (2, 3) and raw["utmQ"].shape == (2, 2)
    assert raw["numImages"][0, 0] == 3 and raw["numQueries"][0, 0] == 2
    assert raw["posDistSqThr"][0, 0] == 625 and raw["nonTrivPosDistSqThr"][0, 0] == 100
    back = GeoDataset.from_dbstruct(path)
    assert back.db_paths == DB_NAMES and back.query_paths == Q_NAMES
    np.testing.assert_array_equal(back.query_utm, UTM_Q.T)
    assert back.query_time_stamps.tolist() == [7, 8]
    assert sorted(os.listdir(tmp_path)) == ["w.mat"]  # no temporary file left behind
    # No creation time in the header (scipy writes one): equal datasets give equal bytes.
    header = open(path, "rb").read(128)
    assert b"Created on" not in header and header.startswith(b"MATLAB 5.0 MAT-file")


@pytest.mark.parametrize("missing", ["utmDb", "qImageFns", "nonTrivPosDistSqThr", "numQueries"])
def test_missing_field_is_named(tmp_path, missing):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"dbStruct": _pitts_fields(**{missing: None})})
    with pytest.raises(
        ValueError,
        match=f"missing the field\\(s\\) {missing}.*bad.mat|bad.mat.*missing the field\\(s\\) {missing}",
    ):
        GeoDataset.from_dbstruct(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(numImages=4.0), "numImages says 4 but dbImageFns has 3"),
        (dict(utmQ=UTM_Q[:, :1]), "numQueries says 2 but utmQ has 1"),
        (dict(utmDb=UTM_DB.T), r"utmDb.*2 x N"),
        (dict(posDistSqThr=600.0), "posDistSqThr=600 is not posDistThr"),
        (dict(qImageFns=_cell([]), utmQ=np.zeros((2, 0)), numQueries=0.0), "no query images"),
        (dict(dbImageFns=_cell(["../../etc/passwd", "b", "c"])), "escapes the image root"),
    ],
)
def test_inconsistent_file_is_reported(tmp_path, changes, message):
    path = tmp_path / "inconsistent.mat"
    scipy.io.savemat(path, {"dbStruct": _pitts_fields(**changes)})
    with pytest.raises(ValueError, match=message) as info:
        GeoDataset.from_dbstruct(path)
    assert "inconsistent.mat" in str(info.value)


def test_no_dbstruct_variable(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"something": np.zeros(3)})
    with pytest.raises(ValueError, match=r"no variable 'dbStruct'.*something"):
        GeoDataset.from_dbstruct(path)


def test_v73_hdf5_file_is_detected(tmp_path):
    path = tmp_path / "pitts250k_train.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_group("dbStruct").create_dataset("numImages", data=np.array([[3.0]]))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")
    with pytest.raises(ValueError, match=r"pitts250k_train.mat is a MATLAB v7.3 \(HDF5\)"):
        GeoDataset.from_dbstruct(path)


def test_missing_and_non_mat_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.mat"):
        GeoDataset.from_dbstruct(tmp_path / "nowhere.mat")
    text = tmp_path / "notes.mat"
    text.write_text("just some text, not MATLAB")
    with pytest.raises(ValueError, match="notes.mat"):
        GeoDataset.from_dbstruct(text)
