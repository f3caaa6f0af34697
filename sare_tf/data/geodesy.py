"""GPS in, metres inside: latitude / longitude (WGS84 degrees) to one UTM frame per dataset.

Every distance in sare_tf (the 10 m / 25 m ground truth, the localization consensus) is
Euclidean in metres, so positions given in degrees are projected with the `utm` package. One
dataset gets one zone, so that all its positions share a frame: the zone of the positions' median
(standard 6-degree zones with the Norway / Svalbard exceptions, as `utm` computes them), every
point projected into it, and the hemisphere of the median forced for all (northings stay
continuous across the equator). Points up to one zone away from that zone are projected into it
(the scale error there stays below 0.3 %, well under the 25 m rule's tolerance over a city);
a dataset reaching farther is refused: its distances in one frame would be wrong, and it should
be split by region.
"""

from __future__ import annotations

import numpy as np

MAX_ZONE_OFFSET = 1
UTM_LATITUDE_RANGE = (-80.0, 84.0)


def check_latlon(latitudes, longitudes, row_names) -> tuple[np.ndarray, np.ndarray]:
    """Float64 arrays, refused at the first bad row (`row_names(i)` names it, e.g. file:line)."""
    latitudes = np.asarray(latitudes, np.float64).reshape(-1)
    longitudes = np.asarray(longitudes, np.float64).reshape(-1)
    bad_lat = ~np.isfinite(latitudes) | (latitudes < UTM_LATITUDE_RANGE[0])
    bad_lat |= latitudes > UTM_LATITUDE_RANGE[1]
    bad_lon = ~np.isfinite(longitudes) | (np.abs(longitudes) > 180.0)
    for bad, field, values, allowed in (
        (bad_lat, "latitude", latitudes, "[-80, 84] (the UTM range)"),
        (bad_lon, "longitude", longitudes, "[-180, 180]"),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{row_names(row)}: {field} {values[row]:g} is not a degree value in {allowed}"
                f"{f' ({int(bad.sum())} rows in all)' if bad.sum() > 1 else ''}."
            )
    return latitudes, longitudes


def _zone_numbers(latitudes, longitudes) -> np.ndarray:
    import utm

    return np.array(
        [
            utm.latlon_to_zone_number(lat, lon)
            for lat, lon in zip(latitudes, longitudes, strict=True)
        ],
        int,
    )


def utm_from_latlon(latitudes, longitudes, row_names=lambda i: f"row {i}"):
    """Projects WGS84 degrees into one UTM zone chosen for the whole set.

    Args:
        latitudes, longitudes: `[N]` degrees.
        row_names: `row_names(i)` names row i in error messages (file and line).

    Returns:
        `(utm [N, 2] easting / northing in metres, frame)`, `frame` saying which zone was chosen,
        e.g. "UTM zone 17N (WGS84), from latitude/longitude".

    Raises:
        ValueError: a non-finite or out-of-range coordinate (its row named), or positions
            spanning more than one zone beyond the chosen one.
    """
    import utm

    latitudes, longitudes = check_latlon(latitudes, longitudes, row_names)
    if latitudes.size == 0:
        return np.zeros((0, 2)), "UTM (no positions)"
    centre_lat, centre_lon = float(np.median(latitudes)), float(np.median(longitudes))
    zone = utm.latlon_to_zone_number(centre_lat, centre_lon)
    zones = _zone_numbers(latitudes, longitudes)
    offsets = np.minimum(np.abs(zones - zone), 60 - np.abs(zones - zone))  # zones wrap at 180
    if offsets.max() > MAX_ZONE_OFFSET:
        far = int(np.argmax(offsets))
        raise ValueError(
            f"The positions span UTM zones {zones.min()}..{zones.max()}: {row_names(far)} is "
            f"{offsets[far]} zones from the dataset's zone {zone} (its median position). One "
            "metric frame cannot hold them without distorting distances; split the dataset by "
            "region."
        )
    northern = centre_lat >= 0
    east, north, _, _ = utm.from_latlon(
        latitudes, longitudes, force_zone_number=zone, force_northern=northern
    )
    frame = f"UTM zone {zone}{'N' if northern else 'S'} (WGS84), from latitude/longitude"
    return np.stack([east, north], axis=1), frame
