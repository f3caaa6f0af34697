"""Degrees in, metres inside, degrees back out; swapped and stray coordinates caught."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sare_tf.data.geodesy import UtmFrame, utm_from_latlon

# Pittsburgh, around the Cathedral of Learning (the Pitts250k city).
PITTSBURGH = np.array([[40.4443, -79.9532], [40.4450, -79.9540], [40.4438, -79.9525]])


def test_frame_is_recorded_and_answers_go_back_to_latitude_longitude():
    metres, frame = utm_from_latlon(PITTSBURGH[:, 0], PITTSBURGH[:, 1])
    assert frame == UtmFrame(17, True) and frame.epsg == 32617
    assert frame.as_dict() == {
        "kind": "utm", "zone": 17, "hemisphere": "N", "epsg": 32617, "datum": "WGS84"
    }  # fmt: skip
    assert UtmFrame.from_dict(frame.as_dict()) == frame and UtmFrame.from_dict(None) is None
    np.testing.assert_allclose(frame.to_latlon(metres), PITTSBURGH, atol=1e-7)
    # Sydney: southern hemisphere, zone 56.
    metres, frame = utm_from_latlon([-33.8568], [151.2153])
    assert frame.as_dict()["epsg"] == 32756
    np.testing.assert_allclose(frame.to_latlon(metres), [[-33.8568, 151.2153]], atol=1e-7)


def test_swapped_columns_that_are_still_valid_degrees_are_refused():
    with pytest.raises(ValueError, match=r"swapped latitude/longitude\? .*latitude 40.44"):
        utm_from_latlon(PITTSBURGH[:, 1], PITTSBURGH[:, 0])  # Pittsburgh lands in Antarctica


def test_an_out_of_range_swap_says_swapped():
    with pytest.raises(ValueError, match=r"latitude 151.215 is not .*swapped latitude/longitude"):
        utm_from_latlon([151.2153], [-33.8568], lambda i: f"city.csv:{i + 2}")


def test_a_row_far_from_every_other_is_warned(caplog):
    rows = np.vstack([PITTSBURGH, [[40.4443 + 3.0, -79.9532]]])  # one row 330 km north
    with caplog.at_level(logging.WARNING, logger="sare_tf"):
        utm_from_latlon(rows[:, 0], rows[:, 1], lambda i: f"city.csv:{i + 2}")
    assert "city.csv:5" in caplog.text and "swapped latitude/longitude?" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sare_tf"):
        utm_from_latlon(PITTSBURGH[:, 0], PITTSBURGH[:, 1])
    assert caplog.text == ""
