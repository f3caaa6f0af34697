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

import dataclasses
import logging

import numpy as np
import utm

logger = logging.getLogger(__name__)

MAX_ZONE_OFFSET = 1
UTM_LATITUDE_RANGE = (-80.0, 84.0)
POLAR_CIRCLE_DEG = 66.56
# A row this far from the dataset's median position, and ten times farther than the median row,
# is reported as an outlier (a typo, or swapped columns in one row).
OUTLIER_MIN_M = 50_000.0


@dataclasses.dataclass(frozen=True)
class UtmFrame:
    """The metric frame positions given in degrees were projected into (WGS84 UTM).

    `str(frame)` describes it for people; `as_dict()` is what an index manifest records, so that
    answers can be turned back into latitude / longitude.

    Example:
        >>> UtmFrame(17, True).epsg
        32617
    """

    zone: int
    northern: bool

    @property
    def epsg(self) -> int:
        return (32600 if self.northern else 32700) + self.zone

    def __str__(self) -> str:
        return f"UTM zone {self.zone}{'N' if self.northern else 'S'} (WGS84), from latitude/longitude"

    def as_dict(self) -> dict:
        return {
            "kind": "utm",
            "zone": self.zone,
            "hemisphere": "N" if self.northern else "S",
            "epsg": self.epsg,
            "datum": "WGS84",
        }

    @classmethod
    def from_dict(cls, record) -> UtmFrame | None:
        """The frame an index manifest records, or None (positions given in metres)."""
        if not isinstance(record, dict) or record.get("kind") != "utm":
            return None
        return cls(int(record["zone"]), record["hemisphere"] == "N")

    def to_latlon(self, positions) -> np.ndarray:
        """`[N, 2]` easting / northing in this frame -> `[N, 2]` latitude, longitude (degrees)."""

        positions = np.asarray(positions, np.float64).reshape(-1, 2)
        if not len(positions):
            return np.zeros((0, 2))
        lat, lon = utm.to_latlon(
            positions[:, 0], positions[:, 1], self.zone, northern=self.northern, strict=False
        )
        return np.stack([np.atleast_1d(lat), np.atleast_1d(lon)], axis=1)


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
            swapped = _valid_swapped(latitudes[row], longitudes[row])
            raise ValueError(
                f"{row_names(row)}: {field} {values[row]:g} is not a degree value in {allowed}"
                f"{f' ({int(bad.sum())} rows in all)' if bad.sum() > 1 else ''}"
                + (
                    f"; swapped latitude/longitude? Read the other way round it is latitude "
                    f"{longitudes[row]:g}, longitude {latitudes[row]:g}. Check the column names."
                    if swapped
                    else "."
                )
            )
    _refuse_likely_swapped(latitudes, longitudes)
    return latitudes, longitudes


def _valid_swapped(latitude: float, longitude: float) -> bool:
    low, high = UTM_LATITUDE_RANGE
    return bool(low <= longitude <= high and abs(latitude) <= 180.0)


def _refuse_likely_swapped(latitudes, longitudes) -> None:
    """Valid degrees that put a street-photo dataset where no city is: swapped columns.

    Refused: a median latitude south of -60 (Antarctica) whose swap is a valid place. Warned: a
    median latitude beyond a polar circle (few cities, and the swap of a mid-latitude one).
    """
    if not latitudes.size:
        return
    median_lat, median_lon = float(np.median(latitudes)), float(np.median(longitudes))
    swap_ok = _valid_swapped(median_lat, median_lon) and abs(median_lon) < POLAR_CIRCLE_DEG
    if median_lat < -60.0 and swap_ok:
        raise ValueError(
            f"The positions lie in Antarctica (median latitude {median_lat:.4f}, longitude "
            f"{median_lon:.4f}): swapped latitude/longitude? Read the other way round they are "
            f"at latitude {median_lon:.4f}, longitude {median_lat:.4f}. Check the column names "
            "(lat, lon)."
        )
    if abs(median_lat) > POLAR_CIRCLE_DEG and swap_ok:
        logger.warning(
            "The positions lie beyond the polar circle (median latitude %.4f, longitude %.4f): "
            "swapped latitude/longitude? Read the other way round they are at latitude %.4f.",
            median_lat, median_lon, median_lon,
        )  # fmt: skip


def warn_outlier_rows(metres, row_names, limit: int = 5) -> list[int]:
    """Rows far from every other row (a typo, or swapped columns in one row), logged as warnings.

    A row is an outlier when it lies more than `OUTLIER_MIN_M` from the median position and ten
    times farther from it than the median row does.

    Returns:
        The outlier row numbers (indices into `metres`).
    """
    metres = np.asarray(metres, np.float64).reshape(-1, 2)
    if len(metres) < 3:
        return []
    distances = np.linalg.norm(metres - np.median(metres, axis=0), axis=1)
    bound = max(OUTLIER_MIN_M, 10.0 * float(np.median(distances)))
    rows = np.flatnonzero(distances > bound).tolist()
    for row in rows[:limit]:
        logger.warning(
            "%s lies %.0f km from the dataset's median position, far from every other row: a "
            "typo, or swapped latitude/longitude?",
            row_names(row), distances[row] / 1000.0,
        )  # fmt: skip
    return rows


def _zone_numbers(latitudes, longitudes) -> np.ndarray:

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
        `(utm [N, 2] easting / northing in metres, frame)`, `frame` the `UtmFrame` chosen
        (None for no positions).

    Raises:
        ValueError: a non-finite or out-of-range coordinate (its row named), or positions
            spanning more than one zone beyond the chosen one.
    """

    latitudes, longitudes = check_latlon(latitudes, longitudes, row_names)
    if latitudes.size == 0:
        return np.zeros((0, 2)), None
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
    metres = np.stack([east, north], axis=1)
    warn_outlier_rows(metres, row_names)
    return metres, UtmFrame(int(zone), bool(northern))
