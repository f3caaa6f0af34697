"""Folder and CSV readers, and GeoDataset.load's choice of reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sare_tf.data import GeoDataset, write_dbstruct
from sare_tf.data.readers import utm_from_file_name


def _touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def test_utm_from_community_file_name():
    name = "@0543256.96@4178906.70@10@S@037.75643@-122.50771@@@@@@pano@.jpg"
    assert utm_from_file_name(f"/x/{name}") == (543256.96, 4178906.70)
    for bad in ("photo.jpg", "@abc@4178906.70@x@.jpg", "0543256@4178906@.jpg"):
        with pytest.raises(ValueError, match="Cannot read a UTM position"):
            utm_from_file_name(bad)


def test_folder_reader(tmp_path):
    db = tmp_path / "sf" / "database"
    queries = tmp_path / "sf" / "queries"
    _touch_image(db / "@0000010.00@0000000.00@10@S@.jpg")
    _touch_image(db / "sub" / "@0000100.00@0000000.00@10@S@.jpg")
    _touch_image(db / "@0000020.50@0000005.00@10@S@.png")
    (db / "notes.txt").write_text("ignored")
    _touch_image(queries / "@0000012.00@0000001.00@q@.jpg")
    ds = GeoDataset.from_folder(db, queries)
    assert ds.image_root == str(tmp_path / "sf")
    assert ds.db_paths == [
        "database/@0000010.00@0000000.00@10@S@.jpg",
        "database/@0000020.50@0000005.00@10@S@.png",
        "database/sub/@0000100.00@0000000.00@10@S@.jpg",
    ]
    np.testing.assert_array_equal(ds.db_utm, [[10, 0], [20.5, 5], [100, 0]])
    np.testing.assert_array_equal(ds.query_utm, [[12, 1]])
    assert ds.positives()[0].tolist() == [0, 1]
    # GeoDataset.load on the parent folder finds the two subfolders.
    loaded = GeoDataset.load(tmp_path / "sf")
    assert loaded.db_paths == ds.db_paths and loaded.name == "sf"
    assert all(p.startswith(str(tmp_path / "sf")) for p in loaded.db_image_paths())


def test_folder_errors(tmp_path):
    (tmp_path / "database").mkdir()
    (tmp_path / "queries").mkdir()
    with pytest.raises(ValueError, match="No image files.*database folder"):
        GeoDataset.from_folder(tmp_path / "database", tmp_path / "queries")
    _touch_image(tmp_path / "database" / "IMG_0001.jpg")
    _touch_image(tmp_path / "queries" / "@1@2@.jpg")
    with pytest.raises(ValueError, match="IMG_0001.jpg"):
        GeoDataset.from_folder(tmp_path / "database", tmp_path / "queries")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        GeoDataset.from_folder(tmp_path / "nowhere", tmp_path / "queries")
    with pytest.raises(ValueError, match="must contain a database folder"):
        GeoDataset.load(tmp_path / "database")


CSV_TEXT = """path,utm_east,utm_north,split
train/db/a.jpg,585000.0,4477000.0,train_db
train/db/b.jpg,585030.0,4477000.0,train_db
train/q/a.jpg,585004.0,4477003.0,train_query
test/db/c.jpg,590000.0,4477000.0,test/database
test/q/c.jpg,590001.0,4477000.0,test:queries
shared/d.jpg,585100.0,4477100.0,db
"""


def test_csv_reader_with_sets(tmp_path):
    (tmp_path / "all.csv").write_text(CSV_TEXT)
    train = GeoDataset.from_csv(tmp_path / "all.csv", which_set="train")
    assert train.name == "all_train" and train.image_root == str(tmp_path)
    assert train.db_paths == ["train/db/a.jpg", "train/db/b.jpg", "shared/d.jpg"]
    np.testing.assert_array_equal(train.query_utm, [[585004.0, 4477003.0]])
    assert train.train_positives()[0].tolist() == [0]
    test = GeoDataset.load(tmp_path / "all.csv", which_set="test", image_root="/data")
    assert test.db_paths == ["test/db/c.jpg", "shared/d.jpg"] and test.query_paths == [
        "test/q/c.jpg"
    ]
    assert test.db_image_paths()[0] == "/data/test/db/c.jpg"


def test_csv_reader_two_files_without_header(tmp_path):
    (tmp_path / "db.csv").write_text("a.jpg,1.0,2.0\nb.jpg,50,2\n")
    (tmp_path / "q.csv").write_text("# queries\nq.jpg,3,2\n")
    ds = GeoDataset.from_csv(tmp_path / "db.csv", query_csv=tmp_path / "q.csv")
    assert ds.db_paths == ["a.jpg", "b.jpg"] and ds.query_paths == ["q.jpg"]
    np.testing.assert_array_equal(ds.db_utm, [[1, 2], [50, 2]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.jpg,1,2\n", r"bad.csv:1: no split column"),
        ("path,e,n,split\na.jpg,1,x,db\n", r"bad.csv:2: UTM easting/northing must be numbers"),
        ("a.jpg,1,2,db\nb.jpg,1,2,sideways\n", r"bad.csv:2: split 'sideways'"),
        ("a.jpg,1,2,db\n", r"bad.csv: no query rows"),
        ("../../etc/a.jpg,1,2,db\nq.jpg,1,2,query\n", r"bad.csv: .*escapes the image root"),
        ("/abs/a.jpg,1,2,db\nq.jpg,1,2,query\n", r"bad.csv: Absolute"),
        ("a.jpg,1,2,db\nq.jpg,nan,2,query\n", r"bad.csv:2: non-finite"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        GeoDataset.from_csv(tmp_path / "bad.csv")


def test_load_dispatch_and_errors(tmp_path):
    ds = GeoDataset(["a.jpg"], [[0, 0]], ["q.jpg"], [[1, 1]])
    write_dbstruct(tmp_path / "x.mat", ds, "train")
    assert GeoDataset.load(tmp_path / "x.mat").db_paths == ["a.jpg"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        GeoDataset.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="Unknown dataset format"):
        GeoDataset.load(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        GeoDataset.load(tmp_path / "nope.csv")


def test_a_csv_of_several_sets_needs_a_set_choice(tmp_path):
    """Issue 19.1: reading a multi-set file whole merged train and test silently."""
    (tmp_path / "all.csv").write_text(CSV_TEXT)
    with pytest.raises(ValueError, match=r"all.csv holds several sets \(test, train\)"):
        GeoDataset.load(tmp_path / "all.csv")
    with pytest.raises(ValueError, match=r"has no set 'val'. Sets in the file: test, train"):
        GeoDataset.load(tmp_path / "all.csv", which_set="val")
    # The command-line form FILE.csv:NAME reaches which_set through GeoDataset.load.
    test = GeoDataset.load(f"{tmp_path / 'all.csv'}:test")
    assert test.name == "all_test" and test.query_paths == ["test/q/c.jpg"]
    assert test.db_paths == ["test/db/c.jpg", "shared/d.jpg"]
    # A file of one set (or of unprefixed rows) still reads without a choice.
    one = "\n".join(line for line in CSV_TEXT.splitlines() if "test" not in line) + "\n"
    (tmp_path / "one.csv").write_text(one)
    assert GeoDataset.load(tmp_path / "one.csv").num_db == 3


def test_check_data_refuses_a_multi_set_csv_and_reads_one_set(tmp_path, capsys):
    from sare_tf import cli

    (tmp_path / "all.csv").write_text(CSV_TEXT)
    assert cli.main(["check-data", str(tmp_path / "all.csv")]) != 0
    assert "holds several sets (test, train)" in capsys.readouterr().err
    cli.main(["check-data", f"{tmp_path / 'all.csv'}:train"])
    out = capsys.readouterr().out
    assert "all_train" in out
