"""`EvaluationSettings` makes `sare-tf evaluate`'s flags and checks their combinations early."""

from __future__ import annotations

import pytest

from sare_tf.cli import build_parser
from sare_tf.config_options import config_from_args
from sare_tf.evaluation.settings import EvaluationSettings
from sare_tf.index.config import IndexConfig

BASE = ["evaluate", "--model", "a.keras", "b.keras", "--dataset", "d.mat"]


def _settings(*flags):
    args = build_parser().parse_args([*BASE, *flags])
    return config_from_args(EvaluationSettings, args), config_from_args(IndexConfig, args)


def test_every_flag_lands_in_its_field():
    settings, index = _settings(
        "--image-size", "96", "128", "--batch-size", "4", "--protocol", "tokyo247",
        "--pca-dims", "64,32", "--pca-from", "train.mat", "--save-predictions", "3",
        "--only-wrong", "--tsne", "--out", "runs/x", "--index-type", "hnsw", "--ef-search", "64",
    )  # fmt: skip
    assert settings.model == ("a.keras", "b.keras") and settings.image_size == (96, 128)
    assert (settings.batch_size, settings.protocol, settings.out) == (4, "tokyo247", "runs/x")
    assert (settings.pca_dims, settings.pca_from) == ("64,32", "train.mat")
    assert settings.save_predictions == 3 and settings.only_wrong and settings.tsne
    assert (index.kind, index.ef_search) == ("hnsw", 64)


def test_defaults_are_the_documented_ones():
    settings, index = _settings()
    assert settings.image_size is None and settings.batch_size == 16
    assert (settings.out, settings.protocol, settings.ground_truth) == (
        "runs/evaluate", "auto", "distance",
    )  # fmt: skip
    assert index == IndexConfig("flat")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--only-wrong"], "--only-wrong applies to --save-predictions N"),
        (["--pca-from", "t.mat"], "give --pca-dims too. Received: --pca-from t.mat"),
        (["--save-predictions", "2", "--ground-truth", "labels"], "needs the distance ground"),
        (["--save-predictions", "-1"], "takes a positive N. Received: --save-predictions -1"),
        (["--index-type", "flat", "--opq"], "`opq` applies to index='ivfpq' only"),
    ],
)
def test_contradicting_flags_are_refused_before_any_model_loads(flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _settings(*flags)


def test_help_groups_the_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    text = capsys.readouterr().out
    for group in ("model:", "data:", "analyses:", "output:", "faiss index:"):
        assert group in text
    assert "--image-size H W" in text and "(default: runs/evaluate)" in text
