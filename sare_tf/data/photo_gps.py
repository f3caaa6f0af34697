"""Where a photo says it was taken: the GPS tags of its EXIF data (Pillow; no pixels decoded)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

GPS_IFD_TAG = 0x8825
# GPS IFD tags (EXIF 2.3): latitude ref / value, longitude ref / value.
GPS_LATITUDE_REF, GPS_LATITUDE, GPS_LONGITUDE_REF, GPS_LONGITUDE = 1, 2, 3, 4


def _degrees(value, path: str, field: str) -> float:
    try:
        parts = [float(part) for part in value]
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(
            f"{path}: EXIF {field} {value!r} is not (degrees, minutes, seconds)."
        ) from None
    if len(parts) != 3 or not all(np.isfinite(parts)):
        raise ValueError(f"{path}: EXIF {field} {value!r} is not (degrees, minutes, seconds).")
    return parts[0] + parts[1] / 60.0 + parts[2] / 3600.0


def exif_latlon(path) -> tuple[float, float] | None:
    """`(latitude, longitude)` in degrees from a photo's EXIF GPS tags, or None without them.

    Reads the tags only (no pixel decoding). South and west references give negative values.

    Raises:
        ValueError: the tags are there but malformed (named with the file).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            gps = image.getexif().get_ifd(GPS_IFD_TAG)
    except (OSError, SyntaxError, ValueError):
        return None
    if GPS_LATITUDE not in gps or GPS_LONGITUDE not in gps:
        return None
    latitude = _degrees(gps[GPS_LATITUDE], path, "GPSLatitude")
    longitude = _degrees(gps[GPS_LONGITUDE], path, "GPSLongitude")
    if str(gps.get(GPS_LATITUDE_REF, "N")).strip().upper().startswith("S"):
        latitude = -latitude
    if str(gps.get(GPS_LONGITUDE_REF, "E")).strip().upper().startswith("W"):
        longitude = -longitude
    return latitude, longitude
