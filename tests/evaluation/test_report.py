"""The evaluation report's naming of models (`unique_model_names`)."""

from __future__ import annotations

from sare_tf.artifacts import DescriptorModel
from sare_tf.evaluation.report import unique_model_names


def test_models_with_one_file_name_are_told_apart_by_their_folders():
    def model(path, name):
        return DescriptorModel(None, name, path, "keras")

    models = [
        model("/runs/sare/best.keras", "best"),
        model("/runs/triplet/best.keras", "best"),
        model("/saved_models/city/3", "city/3"),
        model("/runs/sare/best.keras", "best"),
    ]
    assert unique_model_names(models) == ["sare/best", "triplet/best", "city/3", "sare/best (2)"]
