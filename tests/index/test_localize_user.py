"""What a user meets between a photo and its answer: coordinates in, coordinates out, an index
that works from anywhere, and the command's errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sare_tf.artifacts import load_descriptor_model
from sare_tf.data import GeoDataset
from sare_tf.data.geodesy import UtmFrame
from sare_tf.index.store import PlaceIndex

IMAGE_SIZE = (48, 64)

# Each test runs `sare-tf` in a subprocess (TensorFlow start-up): the full suite, not the fast tier.
pytestmark = pytest.mark.slow
# The synthetic city lies in Pittsburgh's UTM zone 17N; its CSV gives degrees, as GPS tags would.


@pytest.fixture(scope="module")
def latlon_csv(tiny_city, tmp_path_factory):
    """The tiny city's test split as a user's CSV: path, lat, lon, split."""
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    frame = UtmFrame(17, True)
    folder = tmp_path_factory.mktemp("latlon")
    path = folder / "city.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "lat", "lon", "split"])
        for role, paths, utm in (("db", test.db_image_paths(), test.db_utm),
                                 ("query", test.query_image_paths(), test.query_utm)):  # fmt: skip
            for image, (lat, lon) in zip(paths, frame.to_latlon(utm), strict=True):
                writer.writerow(
                    [os.path.relpath(image, test.image_root), f"{lat:.8f}", f"{lon:.8f}", role]
                )
    return {"csv": str(path), "root": test.image_root}


def test_a_latlon_dataset_gives_latlon_answers(tiny_model_file, latlon_csv, tmp_path):
    dataset = GeoDataset.load(latlon_csv["csv"], image_root=latlon_csv["root"])
    assert dataset.frame == UtmFrame(17, True)
    index = PlaceIndex.build(
        load_descriptor_model(tiny_model_file), dataset.db_image_paths(), dataset.db_utm,
        tmp_path / "index", progress=False, frame=dataset.frame,
    )  # fmt: skip
    assert index.manifest["frame"]["epsg"] == 32617
    rows = list(csv.DictReader(open(latlon_csv["csv"])))
    written = {os.path.normpath(os.path.join(latlon_csv["root"], r["path"])): r for r in rows}
    completed = subprocess.run(
        [sys.executable, "-m", "sare_tf", "localize", "--index", str(tmp_path / "index"),
         *dataset.query_image_paths()[:2], "--top-k", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    for line in completed.stdout.splitlines():
        answer = json.loads(line)
        for match in answer["matches"]:
            row = written[os.path.normpath(match["path"])]
            # The degrees given back are the user's own (to 1 mm), UTM stays beside them.
            np.testing.assert_allclose(
                match["latlon"], [float(row["lat"]), float(row["lon"])], atol=1e-8
            )
            assert match["position"][0] > 500_000
        lat, lon = answer["position_latlon"]
        assert 40.0 < lat < 41.0 and -81.0 < lon < -79.0
        assert len(answer["position_top1_latlon"]) == 2


def test_swapped_latlon_columns_are_refused_with_the_word_swapped(latlon_csv, tmp_path):
    swapped = tmp_path / "swapped.csv"
    with open(latlon_csv["csv"]) as source, open(swapped, "w") as target:
        lines = source.read().splitlines()
        target.write("path,lon,lat,split\n" + "\n".join(lines[1:]) + "\n")  # headers swapped
    with pytest.raises(ValueError, match=r"swapped latitude/longitude\?"):
        GeoDataset.load(str(swapped), image_root=latlon_csv["root"])


def test_an_index_moved_with_its_model_works_from_anywhere(tiny_model_file, tiny_city, tmp_path):
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    project = tmp_path / "project"
    os.makedirs(project / "models")
    shutil.copy(tiny_model_file, project / "models" / "tiny.keras")
    index = PlaceIndex.build(
        load_descriptor_model(str(project / "models" / "tiny.keras")), test.db_image_paths(),
        test.db_utm, project / "city-index", progress=False,
    )  # fmt: skip
    assert index.manifest["model"]["path_from_index"] == os.path.join("..", "models", "tiny.keras")
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(str(project), moved)
    photo = test.query_image_paths()[0]
    run = subprocess.run(
        [sys.executable, "-m", "sare_tf", "localize", "--index", str(moved / "city-index"), photo],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    os.remove(moved / "models" / "tiny.keras")  # now the model is nowhere
    with pytest.raises(FileNotFoundError, match=r"manifest.json, model.path.*--model PATH"):
        PlaceIndex.load(moved / "city-index").model_path()


def test_index_build_overwrite_replaces_only_the_index(tiny_model_file, tiny_city, tmp_path):
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    loaded = load_descriptor_model(tiny_model_file)
    folder = tmp_path / "index"
    PlaceIndex.build(loaded, test.db_image_paths()[:10], test.db_utm[:10], folder, progress=False)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        PlaceIndex.build(loaded, test.db_image_paths(), test.db_utm, folder, progress=False)
    index = PlaceIndex.build(
        loaded, test.db_image_paths(), test.db_utm, folder, progress=False, overwrite=True
    )
    assert index.count == test.num_db and (folder / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(folder)) == sorted(
        [*index.manifest["files"].values(), "manifest.json", "notes.txt"]
    )


def _localize(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "sare_tf", "localize", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def plain_index(tiny_model_file, tiny_city, tmp_path_factory):
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    folder = tmp_path_factory.mktemp("plain") / "index"
    PlaceIndex.build(load_descriptor_model(tiny_model_file), test.db_image_paths(), test.db_utm,
                     folder, progress=False)  # fmt: skip
    return {"folder": str(folder), "test": test}


def test_localize_takes_folders_and_globs_and_says_why_each_photo_failed(plain_index, tmp_path):
    test = plain_index["test"]
    photos = tmp_path / "photos"
    os.makedirs(photos)
    for path in test.query_image_paths()[:3]:
        shutil.copy(path, photos)
    (tmp_path / "notes.jpg").write_text("not a picture")
    os.makedirs(tmp_path / "empty")
    run = _localize(
        "--index", plain_index["folder"], str(photos), str(photos / "*.jpg"), str(tmp_path / "missing.jpg"),
        str(tmp_path / "notes.jpg"), str(tmp_path / "empty"), str(tmp_path / "none-*.png"),
    )  # fmt: skip
    assert run.returncode == 1
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    errors = {os.path.basename(a["photo"]): a["error"] for a in answers if a["error"]}
    assert "no such file" in errors["missing.jpg"]
    assert "not an image file" in errors["notes.jpg"]
    assert "a folder without image files" in errors["empty"]
    assert "no file matches" in errors["none-*.png"]
    localized = [a for a in answers if a["error"] is None]
    assert len(localized) == 3 and all(
        len(a["matches"]) == 10 for a in localized
    )  # folder and glob: once each


def test_bad_photos_fail_before_the_model_loads(plain_index, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    # A model path that cannot load: the photo check must answer first.
    run = _localize("--index", plain_index["folder"], "--model", str(tmp_path / "no-model.keras"),
                    str(tmp_path / "notes.jpg"))  # fmt: skip
    assert run.returncode == 1 and "not an image file" in run.stdout and "Model" not in run.stderr


def test_top_k_is_bounded_and_runtime_checked(plain_index):
    photo = plain_index["test"].query_image_paths()[0]
    count = plain_index["test"].num_db
    run = _localize("--index", plain_index["folder"], photo, "--top-k", str(count + 1))
    assert (
        run.returncode == 2 and f"--top-k must be between 1 and the index's {count}" in run.stderr
    )
    run = _localize("--index", plain_index["folder"], photo, "--runtime", "onnx")
    assert run.returncode == 2 and "--runtime onnx" in run.stderr


def test_confidence_does_not_depend_on_top_k_and_is_reproducible_from_the_printed_distances(
    plain_index,
):
    from sare_tf.index.store import consensus

    index = PlaceIndex.load(plain_index["folder"])
    photos = plain_index["test"].query_image_paths()[:5]
    by_k = {}
    for k in (5, 10, 30):
        run = _localize("--index", plain_index["folder"], *photos, "--top-k", str(k))
        by_k[k] = [json.loads(line) for line in run.stdout.splitlines()]
    for answers in zip(*by_k.values(), strict=True):
        assert len({a["confidence"] for a in answers}) == 1
        assert len({tuple(a["position"]) for a in answers}) == 1
    for answer in by_k[30]:
        best = answer["matches"][:10]
        distances = np.array([m["distance"] for m in best])
        agreed = consensus(np.array([m["position"] for m in best]), 1 - distances**2 / 2, 25.0)
        inside = distances[agreed["members"]].min()
        outside = (
            distances[~agreed["members"]].min() if (~agreed["members"]).any() else distances.max()
        )
        # to 1e-4: the printed distances are rounded to 6 decimals
        assert answer["confidence"] == pytest.approx(max(0.0, 1 - inside / outside), abs=1e-4)
    assert index.count > 30


def test_localize_with_a_dataset_marks_answers_right_or_wrong(plain_index, tiny_city):
    test = plain_index["test"]
    photos = test.query_image_paths()[:6]
    run = _localize("--index", plain_index["folder"], *photos, "--dataset", tiny_city["test"])
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    for answer, truth in zip(answers, test.query_utm[:6], strict=True):
        error = float(np.linalg.norm(np.array(answer["position"]) - truth))
        assert answer["error_m"] == pytest.approx(error, abs=1e-3)
        assert answer["correct"] == (error <= 25.0)
        for match in answer["matches"]:
            assert match["correct"] == (np.linalg.norm(np.array(match["position"]) - truth) <= 25.0)
