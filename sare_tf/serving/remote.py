"""Descriptors computed by another server: KServe's transformer / predictor split.

The predictor (TF Serving, or another `sare-tf serve`) runs the SavedModel; this process
decodes, batches, searches and answers.
"""

from __future__ import annotations

from sare_tf.serving_client import parse_predictions, post_json


def remote_describe_function(predictor_url: str, timeout: float = 60.0):
    """`images -> descriptors` computed by a TF Serving predictor (REST `serving_default`)."""

    def run(images):
        payload = {
            "signature_name": "serving_default",
            "instances": [{"image": image.tolist()} for image in images],
        }
        descriptors = parse_predictions(post_json(predictor_url, payload, timeout=timeout))
        if descriptors.shape[0] != len(images):
            raise RuntimeError(
                f"The predictor at {predictor_url} returned {descriptors.shape[0]} descriptors "
                f"for {len(images)} images."
            )
        return descriptors

    return run
