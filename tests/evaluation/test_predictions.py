"""`evaluate --save-predictions N [--only-wrong]`: each query beside its top-N, checked against
a plain numpy ranking of the same descriptors."""

from __future__ import annotations

import json
import os

import numpy as np

from sare_tf.artifacts import load_descriptor_model, store_image_size
from sare_tf.data import GeoDataset
from sare_tf.encoding import encode


def test_saved_predictions_are_the_top_n_marked_right_or_wrong(tiny_city, tmp_path):
    import keras

    from sare_tf import cli
    from sare_tf.models import build_embedding_model

    keras.utils.set_random_seed(2)
    model = build_embedding_model("tiny", num_clusters=4)
    store_image_size(model, (48, 64))
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model_path), "--dataset", tiny_city["test"], "--out",
            str(out), "--save-predictions", "3", "--only-wrong", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0

    test = GeoDataset.from_dbstruct(tiny_city["test"])
    loaded = load_descriptor_model(str(model_path))
    db, _ = encode(loaded, test.db_image_paths(), progress=False)
    queries, _ = encode(loaded, test.query_image_paths(), progress=False)
    ranking = np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, :3]
    distance = np.linalg.norm(test.db_utm[ranking] - test.query_utm[:, None], axis=-1)
    right = distance <= test.pos_dist_thr
    wrong_queries = np.flatnonzero(~right[:, 0])

    folder = out / "predictions" / "tiny"
    lines = (folder / "predictions.txt").read_text().splitlines()
    assert len(lines) == len(wrong_queries) > 0
    assert sorted(f for f in os.listdir(folder) if f.endswith(".png")) == [
        f"{q:05d}.png" for q in wrong_queries
    ]
    recall1 = json.loads((out / "metrics.json").read_text())["models"]["tiny"]["recall@1"]
    assert len(wrong_queries) == round((1 - recall1) * test.num_queries)
    db_ids = {path: i for i, path in enumerate(test.db_image_paths())}
    for line, query in zip(lines, wrong_queries, strict=True):
        fields = line.split("\t")
        assert fields[0] == test.query_image_paths()[query] and fields[1] == "wrong"
        predicted = [db_ids[path] for path in fields[2::2]]
        # The top 3 by similarity (near-ties may swap between faiss and numpy's ordering).
        np.testing.assert_allclose(
            queries[query] @ db[predicted].T, (queries[query] @ db[ranking[query]].T), atol=1e-5
        )
        near = np.linalg.norm(test.db_utm[predicted] - test.query_utm[query], axis=-1) <= 25.0
        assert fields[3::2] == ["1" if ok else "0" for ok in near]
