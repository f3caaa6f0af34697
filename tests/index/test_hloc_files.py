"""hloc's pairs file and global-descriptor HDF5 written by sare_tf, read back the way hloc's own
readers read them (`utils/io.list_h5_names`, `pairs_from_retrieval.py`'s
`hfile[name]['global_descriptor'].__array__()`, `utils/parsers.parse_retrieval`)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from sare_tf.artifacts import load_descriptor_model
from sare_tf.data import GeoDataset
from sare_tf.encoding import encode
from sare_tf.index.hloc_files import write_pairs

# Each test runs `sare-tf` in a subprocess (TensorFlow start-up): the full suite, not the fast tier.
pytestmark = pytest.mark.slow


def hloc_list_h5_names(path):
    names = []
    with h5py.File(str(path), "r") as fd:
        fd.visititems(
            lambda _, obj: (
                names.append(obj.parent.name.strip("/")) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return list(set(names))


def hloc_descriptors(path, names):
    with h5py.File(str(path), "r") as fd:
        return np.stack([fd[n]["global_descriptor"].__array__() for n in names])


def hloc_parse_retrieval(path):
    retrieval = collections.defaultdict(list)
    with open(path) as f:
        for p in f.read().rstrip("\n").split("\n"):
            if len(p) == 0:
                continue
            q, r = p.split()
            retrieval[q].append(r)
    return dict(retrieval)


def test_evaluate_writes_hlocs_descriptors_and_pairs(tiny_model_file, tiny_city, tmp_path):
    from sare_tf import cli

    out = tmp_path / "hloc"
    argv = ["evaluate", "--model", tiny_model_file, "--dataset", tiny_city["test"], "--out",
            str(tmp_path / "eval"), "--hloc-out", str(out), "--hloc-num-matched", "4", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    test = GeoDataset.from_dbstruct(tiny_city["test"])
    features, pairs = out / "tiny" / "global-feats.h5", out / "tiny" / "pairs-from-retrieval.txt"
    names = hloc_list_h5_names(features)
    assert sorted(names) == sorted(test.db_paths + test.query_paths)
    loaded = load_descriptor_model(tiny_model_file)
    db, _ = encode(loaded, test.db_image_paths(), progress=False)
    queries, _ = encode(loaded, test.query_image_paths(), progress=False)
    np.testing.assert_allclose(hloc_descriptors(features, test.db_paths), db, atol=1e-5)
    np.testing.assert_allclose(hloc_descriptors(features, test.query_paths), queries, atol=1e-5)
    retrieval = hloc_parse_retrieval(pairs)
    assert list(retrieval) == test.query_paths
    db_index = {name: i for i, name in enumerate(test.db_paths)}
    for q, query in enumerate(test.query_paths):
        got = [db_index[name] for name in retrieval[query]]
        expected = np.sort(queries[q] @ db.T)[::-1][:4]
        np.testing.assert_allclose(
            queries[q] @ db[got].T, expected, atol=1e-5
        )  # the top 4, in order


def test_localize_writes_hloc_files_for_its_photos(tiny_model_file, tiny_city, tmp_path):
    from sare_tf.index.store import PlaceIndex

    test = GeoDataset.from_dbstruct(tiny_city["test"])
    PlaceIndex.build(load_descriptor_model(tiny_model_file), test.db_image_paths(), test.db_utm,
                     tmp_path / "index", progress=False)  # fmt: skip
    photos = test.query_image_paths()[:3]
    run = subprocess.run(
        [sys.executable, "-m", "sare_tf", "localize", "--index", str(tmp_path / "index"), *photos,
         "--top-k", "5", "--hloc-out", str(tmp_path / "hloc"), "--hloc-image-dir", test.image_root],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    retrieval = hloc_parse_retrieval(tmp_path / "hloc" / "pairs-from-retrieval.txt")
    for answer, name in zip(answers, test.query_paths[:3], strict=True):
        assert retrieval[name] == [
            os.path.relpath(m["path"], test.image_root) for m in answer["matches"]
        ]
    names = hloc_list_h5_names(tmp_path / "hloc" / "global-feats.h5")
    assert set(names) == set(test.db_paths) | set(test.query_paths[:3])


def test_names_hloc_cannot_read_are_refused(tmp_path):
    with pytest.raises(ValueError, match="without spaces"):
        write_pairs(tmp_path / "pairs.txt", [("query/a b.jpg", "db/c.jpg")])
