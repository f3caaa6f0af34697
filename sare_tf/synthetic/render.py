"""The camera of the synthetic city: pinhole views of a facade at a given time of capture.

A camera stands in the street at `distance_m` from the facade plane, `height_m` above the road,
turned by `yaw_deg` (toward +x along the street) and tilted up by `pitch_deg`. Each pixel's ray
is intersected with the facade plane (texture lookup with bilinear filtering), the road plane
(sidewalk, curb, road) or left to the sky, all in one vectorised pass. A change of position,
distance or angle therefore moves, scales and foreshortens the facade exactly as a real camera
would (perspective, not an image-space shift).

"Times" change what a database image taken on a sunny day and a query taken later share:
sky, illuminant colour, exposure, contrast, gamma, cast shadows, haze, rain, sensor noise, blur
and transient occluders (cars, pedestrians) drawn in front of the scene.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sare_tf.synthetic.facades import Facade


@dataclasses.dataclass(frozen=True)
class CameraPose:
    """Where a view is taken from (street coordinates, metres and degrees)."""

    along_m: float
    distance_m: float
    height_m: float = 2.2
    yaw_deg: float = 0.0
    pitch_deg: float = 12.0


@dataclasses.dataclass(frozen=True)
class Conditions:
    """The time of capture of one image (all effects off by default)."""

    sky_zenith: tuple = (0.32, 0.55, 0.92)
    sky_horizon: tuple = (0.72, 0.82, 0.96)
    gain: tuple = (1.0, 1.0, 1.0)
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    shadow: tuple | None = None  # (slope, offset_m, darkness) of a shadow edge on the facade
    haze: float = 0.0
    haze_colour: tuple = (0.8, 0.82, 0.85)
    noise_std: float = 0.0
    blur: bool = False
    rain: int = 0  # number of streaks
    cars: tuple = ()  # (x_fraction, distance_m, palette index) per car
    pedestrians: tuple = ()  # (x_fraction, distance_m, shirt index) per pedestrian
    jpeg_quality: int = 92
    time_of_day: str = "noon"


TIMES_OF_DAY = {
    # name: sky zenith, sky horizon, illuminant gain, brightness, contrast
    "noon": ((0.30, 0.52, 0.92), (0.72, 0.82, 0.96), (1.0, 1.0, 1.0), 1.05, 1.0),
    "overcast": ((0.62, 0.64, 0.68), (0.80, 0.81, 0.83), (0.96, 0.98, 1.02), 0.82, 0.72),
    "evening": ((0.35, 0.35, 0.60), (0.98, 0.62, 0.35), (1.18, 0.92, 0.68), 0.86, 0.95),
    "morning": ((0.45, 0.60, 0.85), (0.95, 0.85, 0.75), (1.05, 1.0, 0.9), 0.95, 0.9),
    "dusk": ((0.10, 0.12, 0.30), (0.45, 0.35, 0.45), (0.82, 0.85, 1.15), 0.55, 0.8),
}
CAR_PALETTE = np.array(
    [
        [0.75, 0.05, 0.05],
        [0.08, 0.08, 0.10],
        [0.85, 0.85, 0.88],
        [0.15, 0.25, 0.55],
        [0.55, 0.56, 0.58],
        [0.90, 0.80, 0.15],
        [0.10, 0.35, 0.20],
    ],
    np.float32,
)


def focal_length_px(image_width: int, hfov_deg: float) -> float:
    return (image_width / 2) / np.tan(np.radians(hfov_deg) / 2)


def _rays(image_size, hfov_deg, yaw_deg, pitch_deg):
    """World ray directions `(X, Y, Z)` per pixel: X along the street, Y up, Z toward the facade."""
    height, width = image_size
    focal = focal_length_px(width, hfov_deg)
    a = ((np.arange(width) + 0.5 - width / 2) / focal)[None, :]
    b = ((height / 2 - np.arange(height) - 0.5) / focal)[:, None]
    pitch, yaw = np.radians(pitch_deg), np.radians(yaw_deg)
    y_cam = b * np.cos(pitch) + np.sin(pitch)
    z_cam = np.cos(pitch) - b * np.sin(pitch)
    x_world = a * np.cos(yaw) + z_cam * np.sin(yaw)
    z_world = -a * np.sin(yaw) + z_cam * np.cos(yaw)
    return x_world, np.broadcast_to(y_cam, x_world.shape), z_world


def _sample_bilinear(texture: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup of `[R, C, 4]` uint8 at fractional texel centres; outside is transparent."""
    num_rows, num_cols = texture.shape[:2]
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr = (rows - r0)[..., None].astype(np.float32)
    fc = (cols - c0)[..., None].astype(np.float32)
    out = np.zeros(rows.shape + (4,), np.float32)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            rr, cc = r0 + dr, c0 + dc
            inside = (rr >= 0) & (rr < num_rows) & (cc >= 0) & (cc < num_cols)
            values = texture[np.clip(rr, 0, num_rows - 1), np.clip(cc, 0, num_cols - 1)]
            out += np.where(inside[..., None], values.astype(np.float32), 0.0) * (wr * wc)
    return out / 255.0


def render_view(
    facade: Facade,
    pose: CameraPose,
    image_size: tuple[int, int],
    hfov_deg: float,
    conditions: Conditions,
    sidewalk_m: float = 3.0,
) -> np.ndarray:
    """Renders one view as float32 `[H, W, 3]` in [0, 1] (before sensor effects).

    Args:
        facade: the street side looked at.
        pose: camera position and angles.
        image_size: `(height, width)`.
        hfov_deg: horizontal field of view.
        conditions: the time of capture.
        sidewalk_m: width of the sidewalk in front of the facade.

    Returns:
        The image, lit by `conditions` (shadow, illuminant, sky), occluders included.
    """
    x_dir, y_dir, z_dir = _rays(image_size, hfov_deg, pose.yaw_deg, pose.pitch_deg)
    forward = np.maximum(z_dir, 1e-3)
    hit = pose.distance_m / forward
    facade_x = pose.along_m + hit * x_dir
    facade_y = pose.height_m + hit * y_dir
    ppm = facade.pixels_per_m
    rgba = _sample_bilinear(
        facade.texture,
        (facade.height_m - facade_y) * ppm - 0.5,
        (facade_x - facade.x_offset_m) * ppm - 0.5,
    )
    alpha = rgba[..., 3:4]
    shade = np.ones(facade_x.shape, np.float32)
    if conditions.shadow is not None:
        slope, offset, darkness = conditions.shadow
        # A shadow edge fixed on the facade (cast by the opposite buildings): moves with the view.
        shade = np.where(facade_y < slope * (facade_x - pose.along_m) + offset, darkness, 1.0)
        shade = shade.astype(np.float32)
    norm = np.sqrt(x_dir**2 + y_dir**2 + z_dir**2)
    elevation = np.clip(y_dir / norm, 0, 1)[..., None].astype(np.float32)
    zenith = np.asarray(conditions.sky_zenith, np.float32)
    horizon = np.asarray(conditions.sky_horizon, np.float32)
    sky = horizon + (zenith - horizon) * np.sqrt(elevation)
    image = rgba[..., :3] * alpha * shade[..., None] + sky * (1 - alpha)

    # Road plane: rays that reach the ground before the facade.
    on_ground = facade_y < 0
    ground_hit = pose.height_m / np.maximum(-y_dir, 1e-6)
    ground_x = pose.along_m + ground_hit * x_dir
    ground_z = ground_hit * z_dir  # distance toward the facade
    sidewalk = ground_z > pose.distance_m - sidewalk_m
    curb = np.abs(ground_z - (pose.distance_m - sidewalk_m)) < 0.12
    tiles = ((ground_x % 1.2) < 0.05) | ((ground_z % 1.2) < 0.05)
    ground = np.where(sidewalk, np.where(tiles, 0.48, 0.62), 0.33).astype(np.float32)
    ground = np.where(curb, 0.78, ground)
    ground = ground[..., None] * np.array([1.0, 0.99, 0.97], np.float32)
    image = np.where(on_ground[..., None], ground * shade[..., None], image)

    gain = np.asarray(conditions.gain, np.float32) * conditions.brightness
    image = image * gain
    focal = focal_length_px(image_size[1], hfov_deg)
    for x_fraction, distance, colour_index in conditions.cars:
        _draw_car(image, x_fraction, distance, int(colour_index), pose, focal)
    for x_fraction, distance, colour_index in conditions.pedestrians:
        _draw_pedestrian(image, x_fraction, distance, int(colour_index), pose, focal)
    return image


def _ground_row(distance_m: float, pose: CameraPose, height: int, focal: float) -> float:
    """Image row where a ground point `distance_m` ahead of the camera appears."""
    angle = -np.arctan2(pose.height_m, distance_m) - np.radians(pose.pitch_deg)
    return height / 2 - focal * np.tan(angle)


def _draw_car(image, x_fraction, distance_m, colour_index, pose, focal) -> None:
    height, width = image.shape[:2]
    car_w, car_h = focal * 4.3 / distance_m, focal * 1.45 / distance_m
    bottom = _ground_row(distance_m, pose, height, focal)
    left = x_fraction * width - car_w / 2
    rows = (np.arange(height) + 0.5 - (bottom - car_h)) / car_h  # 0 at the roof, 1 at the wheels
    cols = (np.arange(width) + 0.5 - left) / car_w
    r, c = rows[:, None], cols[None, :]
    body = (r > 0.42) & (r < 0.88) & (c > 0.0) & (c < 1.0)
    taper = 0.18 * (0.42 - r) / 0.42
    cabin = (r >= 0.0) & (r <= 0.42) & (c > 0.18 + taper) & (c < 0.82 - taper)
    glass = cabin & (r > 0.08) & (np.abs(c - 0.5) > 0.015)
    wheel = ((r - 0.85) ** 2 * (car_h / car_w) ** 2 + (c - 0.2) ** 2 < 0.1**2) | (
        (r - 0.85) ** 2 * (car_h / car_w) ** 2 + (c - 0.8) ** 2 < 0.1**2
    )
    colour = CAR_PALETTE[colour_index % len(CAR_PALETTE)]
    image[body | cabin] = colour
    image[glass] = [0.12, 0.15, 0.2]
    image[wheel] = [0.05, 0.05, 0.05]


def _draw_pedestrian(image, x_fraction, distance_m, colour_index, pose, focal) -> None:
    height, width = image.shape[:2]
    person_h = focal * 1.75 / distance_m
    bottom = _ground_row(distance_m, pose, height, focal)
    centre = x_fraction * width
    rows = (np.arange(height) + 0.5 - (bottom - person_h)) / person_h  # 0 head top, 1 feet
    cols = (np.arange(width) + 0.5 - centre) / person_h  # in body heights
    r, c = rows[:, None], cols[None, :]
    head = (r - 0.07) ** 2 + c**2 < 0.065**2
    torso = (r > 0.14) & (r < 0.55) & (np.abs(c) < 0.12)
    legs = (r >= 0.55) & (r < 1.0) & (np.abs(c) < 0.1) & (np.abs(c) > 0.012)
    shirt = np.roll(CAR_PALETTE, 2, axis=0)[colour_index % len(CAR_PALETTE)]
    image[legs] = [0.12, 0.12, 0.18]
    image[torso] = shirt
    image[head] = [0.75, 0.58, 0.45]


def apply_sensor(image: np.ndarray, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, gamma, haze, rain, blur and noise; returns uint8 `[H, W, 3]`."""
    image = (image - 0.5) * conditions.contrast + 0.5
    image = np.clip(image, 0, 1) ** conditions.gamma
    if conditions.haze > 0:
        haze = np.asarray(conditions.haze_colour, np.float32)
        image = image * (1 - conditions.haze) + haze * conditions.haze
    if conditions.rain:
        height, width = image.shape[:2]
        length = max(3, height // 12)
        starts_r = rng.uniform(-length, height, conditions.rain)
        starts_c = rng.uniform(0, width, conditions.rain)
        steps = np.arange(length)
        rr = np.clip((starts_r[:, None] + steps[None, :]).astype(int), 0, height - 1)
        cc = np.clip((starts_c[:, None] + 0.35 * steps[None, :]).astype(int), 0, width - 1)
        image[rr, cc] = image[rr, cc] * 0.5 + 0.45
    if conditions.blur:
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        image = (
            padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        ) * 0.125 + image * 0.5
    if conditions.noise_std > 0:
        image = image + rng.normal(0, conditions.noise_std, image.shape).astype(np.float32)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
