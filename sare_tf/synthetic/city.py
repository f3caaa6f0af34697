"""The synthetic city: a seeded, deterministic place-recognition dataset in the Pittsburgh layout.

Streets run east-west in UTM metres (zone 17T-like coordinates), each lined on both sides by
procedurally painted facades (`synthetic_facades`). Database images are taken along every street
every `db_spacing_m` metres, looking at each side from the lane on that side (so the two views
taken at one position are 12 m apart and never training positives of each other), on one sunny
day. Queries are taken at other
positions along the same streets at "other times" (`synthetic_render`): another illuminant and
exposure, shadows, haze, rain, noise, blur, passing cars and pedestrians, and a different
viewpoint (lateral offset, so another scale; yaw and pitch, so another perspective). Nearby views
share most of their content; views a street apart share only the city's style.

The train, val and test splits are different streets in different districts (thousands of metres
apart), written as JPEG files under `out_dir/images/<split>/` plus one dbStruct `.mat` file per
split (`out_dir/synthcity_<split>.mat`, image root `out_dir`), read by the same reader as
Pittsburgh 30k/250k. `out_dir/synthcity_<split>_queries.json` records how each query was taken
(side, distance, yaw, pitch, time of day, weather, occluders) for error analysis, and
`out_dir/city.json` the settings (a matching city is reused).

Example:
    >>> mats = make_synthetic_city("/tmp/city", preset="tiny", seed=0)
    >>> ds = GeoDataset.from_dbstruct(mats["train"])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
from PIL import Image

from sare_tf.atomic import write_json_atomic
from sare_tf.data.dbstruct import write_dbstruct
from sare_tf.data.geo_dataset import GeoDataset
from sare_tf.progress import ProgressBar
from sare_tf.synthetic.facades import make_facade, make_glyph_alphabet
from sare_tf.synthetic.render import (
    TIMES_OF_DAY,
    CameraPose,
    Conditions,
    apply_sensor,
    render_view,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 2
# Origin of the city and of each split's district (UTM easting, northing in metres).
CITY_ORIGIN = (584000.0, 4477000.0)
DISTRICT_STRIDE_M = 5000.0
STREET_STRIDE_M = 120.0


@dataclasses.dataclass(frozen=True)
class CityConfig:
    """Sizes and difficulty of a synthetic city.

    Attributes:
        image_size: `(height, width)` of the written JPEG files.
        hfov_deg: horizontal field of view of the camera.
        streets: number of streets per split, `(train, val, test)`.
        street_length_m: length of every street.
        db_spacing_m: distance between database positions along a street (two images each:
            one per side).
        queries_per_street: queries taken at random positions along each street, one number
            for all splits or `(train, val, test)`.
        facade_distance_m: distance from a database camera to the facade it photographs.
        lane_offset_m: each side is photographed from the lane on its side of the centre line,
            this far from it: the two views taken at one position along the street are
            `2 * lane_offset_m` apart (12 m: more than the 10 m training-positive radius, so
            a training positive always shows the same facade as its query).
        camera_height_m: camera height above the road.
        pitch_deg: upward tilt of the database camera.
        query_max_yaw_deg: queries turn by up to this angle (database: 2 degrees).
        query_lateral_m: queries stand up to this far from the centre line.
        query_pitch_jitter_deg: queries tilt by up to this much more or less.
        appearance_change: 0 (queries lit like the database) to 1 (full "other time" changes).
        occluders: expected number of cars + pedestrians per query is about `2 * occluders`.
        max_texture_ppm: cap on facade texels per metre (memory for large images).
        db_jpeg_quality: JPEG quality of database images (queries: 60 to 92).
    """

    image_size: tuple[int, int] = (120, 160)
    hfov_deg: float = 70.0
    streets: tuple[int, int, int] = (6, 2, 2)
    street_length_m: float = 200.0
    db_spacing_m: float = 4.0
    queries_per_street: int | tuple[int, int, int] = 50
    facade_distance_m: float = 12.0
    lane_offset_m: float = 6.0
    camera_height_m: float = 2.2
    pitch_deg: float = 12.0
    query_max_yaw_deg: float = 15.0
    query_lateral_m: float = 1.5
    query_pitch_jitter_deg: float = 4.0
    appearance_change: float = 1.0
    occluders: float = 1.0
    max_texture_ppm: float = 40.0
    db_jpeg_quality: int = 92

    def __post_init__(self):
        height, width = self.image_size
        if min(height, width) < 16:
            raise ValueError(f"`image_size` must be at least 16x16. Received: {self.image_size}")
        if len(self.streets) != 3 or min(self.streets) < 1:
            raise ValueError(
                f"`streets` must give at least one street for each of train, val, test. "
                f"Received: streets={self.streets}"
            )
        if not 0 < self.db_spacing_m <= self.street_length_m:
            raise ValueError(
                "`db_spacing_m` must be positive and at most `street_length_m`. "
                f"Received: db_spacing_m={self.db_spacing_m}"
            )
        if self.street_length_m < 20:
            raise ValueError(
                f"`street_length_m` must be at least 20. Received: {self.street_length_m}"
            )
        counts = self.queries_per_split()
        if len(counts) != 3 or min(counts) < 1:
            raise ValueError(
                "`queries_per_street` must be at least 1 (one number or one per split). "
                f"Received: {self.queries_per_street}"
            )

    def queries_per_split(self) -> tuple[int, ...]:
        """Queries per street for `(train, val, test)`."""
        value = self.queries_per_street
        if isinstance(value, int | np.integer):
            return (int(value),) * 3
        return tuple(int(v) for v in value)

    def num_images(self) -> dict[str, tuple[int, int]]:
        """`{split: (database images, queries)}`."""
        positions = len(_db_positions(self))
        return {
            split: (2 * positions * count, queries * count)
            for split, count, queries in zip(
                SPLITS, self.streets, self.queries_per_split(), strict=True
            )
        }


PRESETS: dict[str, dict] = {
    # A few hundred 60x80 images in a few seconds: for tests.
    "tiny": dict(
        image_size=(60, 80),
        streets=(2, 1, 1),
        street_length_m=100.0,
        db_spacing_m=5.0,
        queries_per_street=12,
    ),
    # About 1600 120x160 images (test: 200 queries, so Recall@1 moves in 0.5-point steps):
    # for `sare-tf demo` on a CPU.
    "demo": dict(
        image_size=(120, 160),
        streets=(6, 2, 2),
        street_length_m=200.0,
        db_spacing_m=4.0,
        queries_per_street=(50, 50, 100),
    ),
}


def city_config(preset: str = "tiny", **overrides) -> CityConfig:
    """The `CityConfig` of a preset with some fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: {preset!r}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(CityConfig)})
    if unknown:
        raise ValueError(f"Unknown synthetic city setting(s): {unknown}")
    values = dict(PRESETS[preset])
    values.update(overrides)
    for key in ("image_size", "streets"):
        values[key] = tuple(int(v) for v in values[key])
    if not isinstance(values["queries_per_street"], int | np.integer):
        values["queries_per_street"] = tuple(int(v) for v in values["queries_per_street"])
    return CityConfig(**values)


def _db_positions(config: CityConfig) -> np.ndarray:
    count = int(np.floor(config.street_length_m / config.db_spacing_m + 1e-9)) + 1
    return np.arange(count) * config.db_spacing_m


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


def _database_conditions(rng: np.random.Generator, config: CityConfig, distance: float):
    pedestrians = tuple(
        (rng.uniform(0.05, 0.95), rng.uniform(4.0, distance - 2.0), int(rng.integers(7)))
        for _ in range(rng.poisson(0.15 * config.occluders))
    )
    return Conditions(brightness=float(np.exp(rng.normal(0, 0.03))), pedestrians=pedestrians)


def _query_conditions(rng: np.random.Generator, config: CityConfig, distance: float):
    change = config.appearance_change
    names = list(TIMES_OF_DAY)
    time_of_day = names[int(rng.choice(len(names), p=[0.2, 0.25, 0.2, 0.2, 0.15]))]
    zenith, horizon, gain, brightness, contrast = TIMES_OF_DAY[time_of_day]
    if change < 1:  # blend toward the database's sunny day
        base_zenith, base_horizon, base_gain, base_brightness, base_contrast = TIMES_OF_DAY["noon"]
        blend = lambda a, b: tuple(np.asarray(b) + change * (np.asarray(a) - np.asarray(b)))  # noqa: E731
        zenith, horizon, gain = (
            blend(zenith, base_zenith),
            blend(horizon, base_horizon),
            blend(gain, base_gain),
        )
        brightness = float(blend((brightness,), (base_brightness,))[0])
        contrast = float(blend((contrast,), (base_contrast,))[0])
    gain = tuple(np.asarray(gain) * (1 + rng.normal(0, 0.06 * change, 3)))
    shadow = None
    if rng.random() < 0.5 * change:
        shadow = (rng.uniform(-0.6, 0.6), rng.uniform(2.0, 12.0), rng.uniform(0.45, 0.8))
    cars = tuple(
        (rng.uniform(0.0, 1.0), rng.uniform(5.0, distance - 3.0), int(rng.integers(7)))
        for _ in range(rng.poisson(0.9 * config.occluders))
    )
    pedestrians = tuple(
        (rng.uniform(0.03, 0.97), rng.uniform(3.5, distance - 2.0), int(rng.integers(7)))
        for _ in range(rng.poisson(1.1 * config.occluders))
    )
    return Conditions(
        sky_zenith=tuple(zenith),
        sky_horizon=tuple(horizon),
        gain=gain,
        brightness=float(brightness * np.exp(rng.normal(0, 0.12 * change))),
        contrast=float(contrast * np.exp(rng.normal(0, 0.1 * change))),
        gamma=float(np.exp(rng.normal(0, 0.15 * change))),
        shadow=shadow,
        haze=float(rng.uniform(0.1, 0.35) * change) if rng.random() < 0.35 else 0.0,
        noise_std=float(rng.uniform(0.0, 0.035) * change),
        blur=bool(rng.random() < 0.3 * change),
        rain=int(rng.integers(20, 60)) if rng.random() < 0.15 * change else 0,
        cars=cars,
        pedestrians=pedestrians,
        jpeg_quality=int(rng.integers(60, 93)),
        time_of_day=time_of_day,
    )


def _pixels_per_m(config: CityConfig) -> float:
    visible_width = 2 * config.facade_distance_m * np.tan(np.radians(config.hfov_deg) / 2)
    return float(min(config.max_texture_ppm, 1.25 * config.image_size[1] / visible_width))


def _write_jpeg(path: str, pixels: np.ndarray, quality: int) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=int(quality))


def _street_facades(config: CityConfig, seed: int, split_index: int, street: int, glyphs):
    """The two facades of a street (side 0 faces north, side 1 south), each longer than the
    street by a margin: views near the street ends see past them."""
    margin = (config.facade_distance_m + config.query_lateral_m) * np.tan(
        np.radians(config.hfov_deg / 2 + config.query_max_yaw_deg)
    ) + 8
    ppm = _pixels_per_m(config)
    return [
        make_facade(
            _rng(seed, split_index, street, side, 1),
            config.street_length_m + 2 * margin,
            ppm,
            glyphs,
            x_offset_m=-margin,
        )
        for side in (0, 1)
    ]


def _facade_coordinate(config: CityConfig, side: int, along: float) -> float:
    # Side 0 faces north (east is to the right), side 1 faces south (east is to the left).
    return along if side == 0 else config.street_length_m - along


def _street_origin(split_index: int, street: int) -> tuple[float, float]:
    """UTM (east, north) of a street's west end on its centre line."""
    return (
        CITY_ORIGIN[0] + split_index * DISTRICT_STRIDE_M,
        CITY_ORIGIN[1] + street * STREET_STRIDE_M,
    )


def _render_database(
    config: CityConfig, seed: int, split_index: int, street: int, facades, out_dir: str
) -> tuple[list, list]:
    """Writes a street's database images (both sides, every `_db_positions` step): paths, UTM."""
    split = SPLITS[split_index]
    east0, north0 = _street_origin(split_index, street)
    lane = config.lane_offset_m
    db_paths, db_utm = [], []
    for index, along in enumerate(_db_positions(config)):
        for side in (0, 1):
            rng = _rng(seed, split_index, street, side, 2, index)
            pose = CameraPose(
                along_m=_facade_coordinate(config, side, along),
                distance_m=config.facade_distance_m,
                height_m=config.camera_height_m,
                yaw_deg=float(rng.uniform(-2, 2)),
                pitch_deg=config.pitch_deg,
            )
            conditions = _database_conditions(rng, config, config.facade_distance_m)
            pixels = apply_sensor(
                render_view(facades[side], pose, config.image_size, config.hfov_deg, conditions),
                conditions,
                rng,
            )
            relative = f"images/{split}/database/s{street:02d}_p{index:04d}_{'NS'[side]}.jpg"
            _write_jpeg(os.path.join(out_dir, relative), pixels, config.db_jpeg_quality)
            db_paths.append(relative)
            db_utm.append((east0 + along, north0 + (lane if side == 0 else -lane)))
    return db_paths, db_utm


def _query_record(relative: str, side: int, distance: float, pose, conditions) -> dict:
    """What `query_conditions.json` says of one query view."""
    return {
        "path": relative,
        "side": "NS"[side],
        "distance_m": round(distance, 3),
        "yaw_deg": round(pose.yaw_deg, 2),
        "pitch_deg": round(pose.pitch_deg, 2),
        "time_of_day": conditions.time_of_day,
        "shadow": conditions.shadow is not None,
        "haze": round(conditions.haze, 3),
        "noise_std": round(conditions.noise_std, 4),
        "blur": conditions.blur,
        "rain": conditions.rain > 0,
        "cars": len(conditions.cars),
        "pedestrians": len(conditions.pedestrians),
        "jpeg_quality": conditions.jpeg_quality,
    }


def _render_queries(
    config: CityConfig, seed: int, split_index: int, street: int, facades, out_dir: str
) -> tuple[list, list, list]:
    """Writes a street's queries (random positions, poses and conditions): paths, UTM, records."""
    split = SPLITS[split_index]
    east0, north0 = _street_origin(split_index, street)
    lane, facade_distance = config.lane_offset_m, config.facade_distance_m
    query_paths, query_utm, query_info = [], [], []
    rng = _rng(seed, split_index, street, 3)
    for index in range(config.queries_per_split()[split_index]):
        along = float(rng.uniform(4.0, config.street_length_m - 4.0))
        side = int(rng.integers(2))
        lateral = float(rng.uniform(-config.query_lateral_m, config.query_lateral_m))
        # Lateral offsets are northward; side 0's facade is to the north, side 1's to the south.
        distance = facade_distance - lateral if side == 0 else facade_distance + lateral
        view_rng = _rng(seed, split_index, street, 4, index)
        pose = CameraPose(
            along_m=_facade_coordinate(config, side, along),
            distance_m=distance,
            height_m=config.camera_height_m + float(view_rng.uniform(-0.3, 0.3)),
            yaw_deg=float(view_rng.uniform(-1, 1) * config.query_max_yaw_deg),
            pitch_deg=config.pitch_deg
            + float(view_rng.uniform(-1, 1) * config.query_pitch_jitter_deg),
        )
        conditions = _query_conditions(view_rng, config, distance)
        pixels = apply_sensor(
            render_view(facades[side], pose, config.image_size, config.hfov_deg, conditions),
            conditions,
            view_rng,
        )
        relative = f"images/{split}/queries/s{street:02d}_q{index:04d}.jpg"
        _write_jpeg(os.path.join(out_dir, relative), pixels, conditions.jpeg_quality)
        query_paths.append(relative)
        query_utm.append((east0 + along, north0 + (lane if side == 0 else -lane) + lateral))
        query_info.append(_query_record(relative, side, distance, pose, conditions))
    return query_paths, query_utm, query_info


def _render_street(
    config: CityConfig, seed: int, split_index: int, street: int, glyphs, out_dir: str
) -> tuple[list, list, list, list, list]:
    """Renders and writes the database images and queries of one street (+ query metadata)."""
    facades = _street_facades(config, seed, split_index, street, glyphs)
    db_paths, db_utm = _render_database(config, seed, split_index, street, facades, out_dir)
    query_paths, query_utm, query_info = _render_queries(
        config, seed, split_index, street, facades, out_dir
    )
    os.makedirs(os.path.join(out_dir, "images", SPLITS[split_index]), exist_ok=True)
    return db_paths, db_utm, query_paths, query_utm, query_info


def _manifest(config: CityConfig, preset: str, seed: int) -> dict:
    fields = dataclasses.asdict(config)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {"generator_version": GENERATOR_VERSION, "preset": preset, "seed": int(seed), **fields}


def make_synthetic_city(
    out_dir,
    preset: str = "tiny",
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
    **overrides,
) -> dict[str, str]:
    """Generates the synthetic city (JPEG images and one dbStruct `.mat` per split).

    A city already present in `out_dir` with the same settings (recorded in `city.json`) is
    reused unless `force` is set. Same settings and seed give byte-identical files.

    Args:
        out_dir: output folder (the image root of the `.mat` files).
        preset: "tiny" (tests: a few hundred 60x80 images) or "demo" (about 1600
            120x160 images).
        seed: the city's seed.
        force: regenerate even when a matching city exists.
        progress: print a progress bar and a summary.
        **overrides: `CityConfig` fields, e.g. `image_size=(96, 128)`, `streets=(2, 1, 1)`.

    Returns:
        `{"train": path, "val": path, "test": path}` of the `.mat` files.
    """
    config = city_config(preset, **overrides)
    out_dir = os.fspath(out_dir)
    mats = {split: os.path.join(out_dir, f"synthcity_{split}.mat") for split in SPLITS}
    manifest_path = os.path.join(out_dir, "city.json")
    manifest = _manifest(config, preset, seed)
    if not force and os.path.isfile(manifest_path) and all(map(os.path.isfile, mats.values())):
        with open(manifest_path) as handle:
            if json.load(handle) == manifest:
                if progress:
                    logger.info(
                        f"Synthetic city already present in {out_dir} (same settings): reused."
                    )
                return mats
    for split in SPLITS:
        for kind in ("database", "queries"):
            os.makedirs(os.path.join(out_dir, "images", split, kind), exist_ok=True)
    glyphs = make_glyph_alphabet(_rng(seed, 99))
    counts = config.num_images()
    total = sum(db + q for db, q in counts.values())
    if progress:
        logger.info(
            f"Generating the '{preset}' synthetic city in {out_dir}: {total} images of "
            f"{config.image_size[0]}x{config.image_size[1]} (seed {seed})"
        )
    bar = ProgressBar(total, "image", enabled=progress)
    start = time.perf_counter()
    done = 0
    for split_index, split in enumerate(SPLITS):
        db_paths, db_utm, query_paths, query_utm, query_info = [], [], [], [], []
        for street in range(config.streets[split_index]):
            parts = _render_street(config, seed, split_index, street, glyphs, out_dir)
            db_paths += parts[0]
            db_utm += parts[1]
            query_paths += parts[2]
            query_utm += parts[3]
            query_info += parts[4]
            done += len(parts[0]) + len(parts[2])
            bar.update(done)
        dataset = GeoDataset(
            db_paths=db_paths,
            db_utm=np.asarray(db_utm),
            query_paths=query_paths,
            query_utm=np.asarray(query_utm),
            image_root=out_dir,
            name=f"synthcity_{split}",
        )
        write_dbstruct(mats[split], dataset, split)
        # How each query was taken (viewpoint, time, weather, occluders): for error analysis.
        with open(os.path.join(out_dir, f"synthcity_{split}_queries.json"), "w") as handle:
            json.dump(query_info, handle, indent=0)
    write_json_atomic(manifest_path, manifest, indent=1)
    if progress:
        seconds = time.perf_counter() - start
        logger.info(
            f"Wrote {total} images in {seconds:.1f} s ({60 * total / max(seconds, 1e-9):.0f} "
            f"images/min); splits: "
            + ", ".join(f"{s} {db} db + {q} queries" for s, (db, q) in counts.items())
        )
    return mats
