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
        ("path,utm_east,utm_north,split\na.jpg,1,x,db\n", r"bad.csv:2: utm_north must be a number"),
        ("path,e,n,split\na.jpg,1,2,db\n", r"bad.csv:1: unknown column 'e'"),
        ("path,lat,lon,utm_east,utm_north\na.jpg,1,2,3,4\n", r"bad.csv:1: .*not both"),
        ("path,lat,lat,split\na.jpg,1,2,db\n", r"bad.csv:1: two columns mean 'lat'"),
        ("path,lat,lon,split\na.jpg,40.4,-80,db\nq.jpg,95,-80,query\n", r"bad.csv:3: latitude 95"),
        (
            "path,lat,lon,split\na.jpg,40.4,-80,db\nq.jpg,40.4,-181,query\n",
            r"bad.csv:3: longitude -181",
        ),
        ("a.jpg,1,2,db\nb.jpg,1,2,sideways\n", r"bad.csv:2: split 'sideways'"),
        ("a.jpg,1,2,db\n", r"bad.csv: no query rows"),
        ("../../etc/a.jpg,1,2,db\nq.jpg,1,2,query\n", r"bad.csv: .*escapes the image root"),
        ("/abs/a.jpg,1,2,db\nq.jpg,1,2,query\n", r"bad.csv: Absolute"),
        ("a.jpg,1,2,db\nq.jpg,nan,2,query\n", r"bad.csv:2: utm_east is not finite"),
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


# --- GPS in, metres inside ----------------------------------------------------------------------

# Pittsburgh, around 40.4406 N, 79.9959 W: 8 database images on a line 10 m apart, queries at
# the two ends. In degrees, 10 m of northing is 10 / 111 000 degrees of latitude.
_STEP_DEG = 10.0 / 111_000.0


def _latlon_csv(tmp_path, header="path,lat,lon,split"):
    lines = [header]
    for i in range(8):
        lines.append(f"db/{i}.jpg,{40.4406 + i * _STEP_DEG:.8f},-79.9959,db")
    lines.append(f"q/0.jpg,{40.4406 - 0.4 * _STEP_DEG:.8f},-79.9959,query")
    lines.append(f"q/1.jpg,{40.4406 + 7.4 * _STEP_DEG:.8f},-79.9959,query")
    (tmp_path / "gps.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "gps.csv"


def test_a_latlon_header_is_honoured_and_projected_to_one_utm_zone(tmp_path):
    ds = GeoDataset.from_csv(_latlon_csv(tmp_path))
    assert str(ds.frame) == "UTM zone 17N (WGS84), from latitude/longitude"
    assert "UTM zone 17N" in ds.summary()
    spacing = np.linalg.norm(np.diff(ds.db_utm, axis=0), axis=1)
    np.testing.assert_allclose(spacing, 10.0, rtol=0.01)  # metres, not degrees
    # The geometry: each end query has its end's db images within 25 m (0.4 + 10 + 20 m).
    assert [len(p) for p in ds.positives(25.0)] == [3, 3]
    assert ds.positives(25.0)[0].tolist() == [0, 1, 2]
    # Columns in another order, with aliases.
    rows = [line.split(",") for line in (tmp_path / "gps.csv").read_text().splitlines()[1:]]
    reordered = ["split,longitude,latitude,image"] + [
        f"{s},{lon},{lat},{p}" for p, lat, lon, s in rows
    ]
    (tmp_path / "reordered.csv").write_text("\n".join(reordered) + "\n")
    again = GeoDataset.from_csv(tmp_path / "reordered.csv")
    np.testing.assert_allclose(again.db_utm, ds.db_utm)
    assert again.db_paths == ds.db_paths


def test_degrees_without_a_header_are_refused_not_read_as_metres(tmp_path):
    path = _latlon_csv(tmp_path)
    lines = path.read_text().splitlines()[1:]  # drop the header: positional utm_east,utm_north
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="look like latitude/longitude degrees"):
        GeoDataset.from_csv(path)


@pytest.mark.parametrize(
    "lat, lon, east, north, zone",
    [  # published values of independent UTM implementations (WGS84)
        (48.8582, 2.2945, 448251.795, 5411932.678, "31N"),  # Eiffel Tower (pygeodesy's test)
        (50.0, 7.0, 356670.9, 5540547.4, "32N"),  # XCSoar's UTM test (rounded to 0.5 m there)
        (35.720122, 139.752899, 387203.09, 3953623.37, "54N"),  # Tokyo (dart utm package test)
        (-41.28646, 174.77624, 313784.0, 5427057.0, "60S"),  # Wellington (utm's known values)
    ],
)
def test_latlon_conversion_against_published_utm_values(lat, lon, east, north, zone):
    from sare_tf.data.geodesy import utm_from_latlon

    metres, frame = utm_from_latlon([lat], [lon])
    assert f"zone {zone}" in str(frame)
    np.testing.assert_allclose(metres[0], [east, north], atol=0.6)


def test_datasets_spanning_zones_are_handled_or_refused():
    from sare_tf.data.geodesy import utm_from_latlon

    # Across one zone boundary (6 E between zones 31 and 32): one frame, distances kept.
    lats, lons = np.array([45.0, 45.0, 45.0]), np.array([5.999, 6.0, 6.001])
    metres, frame = utm_from_latlon(lats, lons)
    assert "zone 32N" in str(frame) or "zone 31N" in str(frame)
    np.testing.assert_allclose(np.diff(metres[:, 0]), 78.8, rtol=0.01)  # 0.001 deg at 45 N
    with pytest.raises(ValueError, match="span UTM zones 31..34: row 2 is 2 zones"):
        utm_from_latlon([45.0, 45.0, 45.0], [3.0, 10.0, 20.0])


def test_check_data_prints_the_ground_truth_statistics(tmp_path, capsys):
    from sare_tf import cli

    path = _latlon_csv(tmp_path)
    assert cli.main(["check-data", str(path), "--skip-images"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 queries have a database image within 25 m (0 have none)" in out
    assert "positives per query within 25 m: min 3, median 3, max 3" in out
    assert "median spacing 10 m" in out and "UTM zone 17N" in out
    assert "WARNING" not in out
    # Positions that put the whole map inside the radius (degrees taken for metres): warned.
    from sare_tf.data.statistics import describe_ground_truth, ground_truth_statistics

    degrees = GeoDataset([f"{i}.jpg" for i in range(8)], [[-79.9959, 40.4406 + i * _STEP_DEG] for i in range(8)],
                         ["q.jpg"], [[-79.9959, 40.4406]])  # fmt: skip
    stats = ground_truth_statistics(degrees)
    assert stats["positives_per_query"] == {"min": 8, "median": 8.0, "max": 8}
    assert any("in metres" in w for w in stats["warnings"])
    assert describe_ground_truth(stats)[-1].startswith("WARNING")


def _phone_photo(path, lat, lon):
    from PIL import Image, TiffImagePlugin

    def dms(value):
        value = abs(value)
        degrees, minutes = int(value), int((abs(value) - int(value)) * 60)
        seconds = (value - degrees - minutes / 60) * 3600
        rational = TiffImagePlugin.IFDRational
        return (rational(degrees), rational(minutes), rational(round(seconds * 10000), 10000))

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (120, 90, 60)).save(path, exif=exif)


def test_a_folder_of_phone_photos_takes_its_positions_from_exif_gps(tmp_path):
    from sare_tf.data.geodesy import utm_from_latlon

    places = [(40.4406 + i * _STEP_DEG, -79.9959) for i in range(4)]
    for i, (lat, lon) in enumerate(places):
        _phone_photo(tmp_path / "city" / "database" / f"IMG_{i:04d}.jpg", lat, lon)
    _phone_photo(tmp_path / "city" / "queries" / "IMG_9000.jpg", places[1][0], places[1][1])
    ds = GeoDataset.load(tmp_path / "city")
    assert str(ds.frame).startswith("UTM zone 17N")
    expected, _ = utm_from_latlon(*np.array(places).T)
    np.testing.assert_allclose(ds.db_utm, expected, atol=0.01)  # seconds kept to 1e-4"
    assert ds.positives(5.0)[0].tolist() == [1]
    # A photo without GPS: named, not silently dropped.
    from PIL import Image

    Image.new("RGB", (32, 24)).save(tmp_path / "city" / "database" / "IMG_0100.jpg")
    with pytest.raises(ValueError, match=r"1 of 6 images have neither .*IMG_0100.jpg\)"):
        GeoDataset.load(tmp_path / "city")
