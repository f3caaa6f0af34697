"""Procedural facades for the synthetic city: one long RGBA texture per side of a street.

A facade strip is painted building by building in metric coordinates (x along the street, y up
from the ground) at `pixels_per_m` texels per metre. Buildings come in rows that share a style
(window grid, wall finish, cornice) so that facades are repetitive, as in real streets, while
the details that tell places apart are local: wall colour, skyline, shop signs with their own
glyphs, awnings, doors, trees and lamp posts. Alpha 0 marks sky (above the roofs) so that the
camera can paint a sky that depends on the time of capture.

Every array operation works on a whole building (or sign, or tree) at once; there is no loop
over pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Wall colours shared by the whole city (linear-ish RGB in [0, 1]): a small palette makes colour
# alone a weak cue, as it is in real streets.
WALL_PALETTE = np.array(
    [
        [0.62, 0.30, 0.24],  # red brick
        [0.52, 0.26, 0.20],  # dark brick
        [0.80, 0.72, 0.58],  # sandstone
        [0.86, 0.84, 0.78],  # off-white plaster
        [0.60, 0.60, 0.60],  # concrete
        [0.45, 0.47, 0.50],  # slate
        [0.78, 0.62, 0.36],  # ochre
        [0.55, 0.62, 0.66],  # pale blue
        [0.58, 0.64, 0.50],  # sage
        [0.70, 0.50, 0.45],  # terracotta
        [0.90, 0.82, 0.66],  # cream
        [0.38, 0.33, 0.30],  # dark stone
    ],
    dtype=np.float32,
)
SIGN_PALETTE = np.array(
    [
        [0.80, 0.10, 0.10],
        [0.10, 0.30, 0.70],
        [0.10, 0.55, 0.25],
        [0.95, 0.75, 0.10],
        [0.10, 0.10, 0.10],
        [0.95, 0.95, 0.95],
        [0.55, 0.15, 0.55],
        [0.95, 0.45, 0.10],
    ],
    dtype=np.float32,
)
GLYPH_ROWS, GLYPH_COLS = 7, 5


@dataclasses.dataclass
class Facade:
    """An RGBA texture of one side of a street.

    Attributes:
        texture: `[rows, cols, 4]` uint8; row 0 is `height_m` above the ground, alpha 0 is sky.
        pixels_per_m: texels per metre in both directions.
        x_offset_m: street coordinate of texture column 0 (negative: the strip starts before
            the street so that views near its ends are covered).
        height_m: height of the texture top above the ground.
    """

    texture: np.ndarray
    pixels_per_m: float
    x_offset_m: float
    height_m: float


def make_glyph_alphabet(rng: np.random.Generator, num_glyphs: int = 36) -> np.ndarray:
    """`[num_glyphs, 7, 5]` bool bitmaps: the city's "font" for shop signs."""
    glyphs = rng.random((num_glyphs, GLYPH_ROWS, GLYPH_COLS)) < 0.42
    # Strokes: many letters have a full bar, which makes them read as text rather than noise.
    bars = rng.integers(0, 4, size=num_glyphs)
    glyphs[bars == 0, :, 0] = True
    glyphs[bars == 1, 0, :] = True
    glyphs[bars == 2, GLYPH_ROWS // 2, :] = True
    return glyphs


def _style(rng: np.random.Generator) -> dict:
    """A building style: what a row of similar buildings shares."""
    floor_h = rng.uniform(2.9, 3.6)
    spacing = rng.uniform(1.5, 3.0)
    return {
        "floor_h": floor_h,
        "ground_h": rng.uniform(3.6, 4.6),
        "spacing": spacing,
        "win_w": rng.uniform(0.38, 0.62) * spacing,
        "win_h": rng.uniform(0.45, 0.68) * floor_h,
        "win_shape": rng.choice(["rect", "arch", "rect", "split"]),
        "frame_w": rng.uniform(0.06, 0.16),
        "frame_dark": bool(rng.random() < 0.4),
        "mullion": bool(rng.random() < 0.5),
        "shutters": bool(rng.random() < 0.25),
        "finish": rng.choice(["brick", "plaster", "siding", "panels"]),
        "cornice_h": rng.uniform(0.25, 0.8),
        "floor_bands": bool(rng.random() < 0.5),
        "floors": int(rng.integers(2, 7)),
        "width": rng.uniform(7.0, 16.0),
        "palette_index": int(rng.integers(len(WALL_PALETTE))),
    }


def _wall_finish(finish: str, xs, ys, rng: np.random.Generator) -> np.ndarray:
    """`[rows, cols]` brightness multiplier for the wall texture."""
    if finish == "brick":
        course = np.floor(ys / 0.22)
        offset = (course % 2) * 0.25
        joint_h = (ys % 0.22) < 0.035
        joint_v = ((xs[None, :] + offset[:, None]) % 0.5) < 0.035
        return np.where(joint_h[:, None] | joint_v, 0.78, 1.0).astype(np.float32)
    if finish == "siding":
        return (0.9 + 0.1 * ((ys % 0.3) > 0.05)).astype(np.float32)[:, None] * np.ones_like(
            xs, np.float32
        )
    if finish == "panels":
        width = rng.uniform(1.0, 2.0)
        return (0.86 + 0.14 * ((xs % width) > 0.06)).astype(np.float32)[None, :] * np.ones_like(
            ys, np.float32
        )[:, None]
    # Plaster: low-frequency blotches from a few random sinusoids.
    field = np.zeros((ys.size, xs.size), np.float32)
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.2, 1.2), rng.uniform(0.2, 1.2), rng.uniform(0, 2 * np.pi)
        field += np.sin(fx * xs[None, :] + fy * ys[:, None] + phase).astype(np.float32)
    return 0.95 + 0.03 * field


def _paint_upper_windows(region, xs, ys, width_m: float, floors: int, style, rng) -> None:
    """Paints the upper floors' windows (a grid of floor x column cells) in place, all at once."""
    spacing = style["spacing"]
    ncols = max(1, int((width_m - 0.6) // spacing))
    margin_x = (width_m - ncols * spacing) / 2
    cell_x = np.floor((xs - margin_x) / spacing)
    u = xs - margin_x - cell_x * spacing - spacing / 2  # from the window centre
    col_ok = (cell_x >= 0) & (cell_x < ncols)
    y_above = ys - style["ground_h"]
    floor_idx = np.floor(y_above / style["floor_h"])
    v = y_above - floor_idx * style["floor_h"] - style["floor_h"] * 0.28  # from the sill
    floor_ok = (floor_idx >= 0) & (floor_idx < floors)
    half_w, win_h, frame = style["win_w"] / 2, style["win_h"], style["frame_w"]
    inside_x = np.abs(u)[None, :] < half_w
    inside_y = (v >= 0) & (v < win_h)
    window = inside_x & inside_y[:, None]
    if style["win_shape"] == "arch":
        # A semicircular top: cut the corners above (win_h - half_w).
        top = v[:, None] - (win_h - half_w)
        window &= ~((top > 0) & (u[None, :] ** 2 + top**2 > half_w**2))
    framed = (np.abs(u)[None, :] < half_w + frame) & ((v >= -frame) & (v < win_h + frame))[:, None]
    grid_ok = col_ok[None, :] & floor_ok[:, None]
    window &= grid_ok
    framed &= grid_ok
    frame_colour = np.float32(0.15) if style["frame_dark"] else np.float32(0.92)
    region[framed & ~window] = frame_colour
    # Per-window glass: reflections, curtains, a lit room; drawn from a small per-building table.
    table = rng.random((floors + 1, ncols + 1)).astype(np.float32)
    fi = np.clip(floor_idx, 0, floors).astype(int)
    ci = np.clip(cell_x, 0, ncols).astype(int)
    value = table[fi[:, None], ci[None, :]]
    glass = np.stack([0.12 + 0.25 * value, 0.15 + 0.25 * value, 0.22 + 0.30 * value], axis=-1)
    curtain = value > 0.82
    glass[curtain] = [0.75, 0.65, 0.45]
    # Sky reflection gradient inside each pane.
    glass *= (0.85 + 0.3 * np.clip(v / max(win_h, 1e-3), 0, 1))[:, None, None]
    region[window] = glass[window]
    if style["mullion"] or style["win_shape"] == "split":
        bar = (np.abs(u)[None, :] < 0.04) | (np.abs(v - win_h * 0.55) < 0.04)[:, None]
        region[window & bar] = frame_colour
    if style["shutters"]:
        shutter_colour = SIGN_PALETTE[int(rng.integers(len(SIGN_PALETTE)))] * 0.7
        sx = (np.abs(u) >= half_w + frame) & (np.abs(u) < half_w + frame + style["win_w"] * 0.45)
        shutter = sx[None, :] & inside_y[:, None] & grid_ok
        region[shutter] = shutter_colour


def _paint_building(canvas, alpha, ppm, x0_m, width_m, style, rng, glyphs) -> None:
    """Paints one building into `canvas` (`[rows, cols, 3]` float32) in place."""
    rows, cols = canvas.shape[:2]
    total_h = rows / ppm
    floors = max(1, style["floors"] + int(rng.integers(-1, 2)))
    height = style["ground_h"] + floors * style["floor_h"] + style["cornice_h"]
    height = min(height, total_h - 0.5)
    c0, c1 = int(round(x0_m * ppm)), int(round((x0_m + width_m) * ppm))
    r0 = int(round((total_h - height) * ppm))
    c0, c1, r0 = max(c0, 0), min(c1, cols), max(r0, 0)
    if c1 <= c0:
        return
    xs = (np.arange(c0, c1) + 0.5) / ppm - x0_m  # metres from the building's left edge
    ys = total_h - (np.arange(r0, rows) + 0.5) / ppm  # metres above ground
    region = canvas[r0:rows, c0:c1]
    wall = WALL_PALETTE[style["palette_index"]] + rng.normal(0, 0.035, 3).astype(np.float32)
    wall = np.clip(wall, 0.05, 0.98)
    shade = _wall_finish(style["finish"], xs, ys, rng)
    region[:] = wall[None, None, :] * shade[:, :, None]
    alpha[r0:rows, c0:c1] = 255

    _paint_upper_windows(region, xs, ys, width_m, floors, style, rng)
    y_above = ys - style["ground_h"]
    if style["floor_bands"]:
        band = (np.abs(y_above % style["floor_h"]) < 0.12) & (y_above > 0) & (ys < height - 0.3)
        region[band] *= 0.8
    # Cornice: a band under the roof line.
    cornice = (ys > height - style["cornice_h"]) & (ys <= height)
    region[cornice] = np.clip(wall * (0.65 if rng.random() < 0.5 else 1.25), 0, 1)

    _paint_ground_floor(region, xs, ys, width_m, style, rng, glyphs)


def _paint_ground_floor(region, xs, ys, width_m, style, rng, glyphs) -> None:
    ground_h = style["ground_h"]
    kind = rng.choice(["shop", "shop", "door", "garage"])
    door_w = rng.uniform(1.0, 1.6)
    door_x = rng.uniform(0.4, max(0.5, width_m - door_w - 0.4))
    door = ((xs >= door_x) & (xs < door_x + door_w))[None, :] & (ys < min(2.4, ground_h - 0.4))[
        :, None
    ]
    door_colour = rng.choice([0.12, 0.3, 0.55]) * np.array([1.0, 0.8, 0.6], np.float32)
    if kind == "shop":
        # Display windows left and right of the door, a sign band, maybe a striped awning.
        display = (
            ((xs > 0.4) & (xs < width_m - 0.4))[None, :]
            & ((ys > 0.6) & (ys < ground_h - 1.3))[:, None]
            & ~door
        )
        region[display] = np.array([0.18, 0.22, 0.26], np.float32) * rng.uniform(0.7, 1.4)
        sign_y0, sign_y1 = ground_h - 1.15, ground_h - 0.3
        sign_x0 = rng.uniform(0.3, width_m * 0.3)
        sign_x1 = rng.uniform(width_m * 0.6, width_m - 0.3)
        _paint_sign(region, xs, ys, sign_x0, sign_x1, sign_y0, sign_y1, rng, glyphs)
        if rng.random() < 0.45:
            stripes = SIGN_PALETTE[rng.choice(len(SIGN_PALETTE), 2, replace=False)]
            awning = ((xs > 0.2) & (xs < width_m - 0.2))[None, :] & (
                (ys > sign_y0 - 0.9) & (ys < sign_y0 - 0.05)
            )[:, None]
            stripe = (np.floor(xs / 0.5) % 2).astype(int)
            colours = np.broadcast_to(stripes[stripe][None, :, :], region.shape)
            region[awning] = colours[awning]
    elif kind == "garage":
        gx0 = rng.uniform(0.3, max(0.4, width_m - 3.3))
        garage = ((xs > gx0) & (xs < gx0 + 3.0))[None, :] & (ys < 2.6)[:, None]
        slats = np.float32(0.6) * (0.5 + 0.1 * ((ys % 0.25) < 0.04)).astype(np.float32)
        shading = np.broadcast_to(slats[:, None, None], region.shape)
        region[garage] = shading[garage]
    else:
        # Residential ground floor: two small windows and steps.
        for wx in (rng.uniform(0.3, 1.5), rng.uniform(width_m - 2.5, width_m - 1.2)):
            win = ((xs > wx) & (xs < wx + 1.0))[None, :] & ((ys > 1.0) & (ys < 2.5))[:, None]
            region[win & ~door] = np.array([0.16, 0.19, 0.24], np.float32)
        steps = ((xs >= door_x - 0.3) & (xs < door_x + door_w + 0.3))[None, :] & (ys < 0.35)[
            :, None
        ]
        region[steps] = 0.55
    frame = (
        ((xs >= door_x - 0.12) & (xs < door_x + door_w + 0.12))[None, :]
        & (ys < min(2.4, ground_h - 0.4) + 0.12)[:, None]
        & ~door
    )
    region[frame] = 0.85
    region[door] = door_colour


def _paint_sign(region, xs, ys, x0, x1, y0, y1, rng, glyphs) -> None:
    """A sign board with a row of glyphs from the city's alphabet."""
    colours = SIGN_PALETTE[rng.choice(len(SIGN_PALETTE), 2, replace=False)]
    board = ((xs >= x0) & (xs < x1))[None, :] & ((ys >= y0) & (ys < y1))[:, None]
    region[board] = colours[0]
    num_letters = int(np.clip((x1 - x0) / 0.55, 2, 14))
    letters = rng.integers(0, len(glyphs), num_letters)
    letter_w = (x1 - x0) / num_letters
    gx = (xs - x0) / letter_w  # letter index + fraction
    letter = np.clip(np.floor(gx), 0, num_letters - 1).astype(int)
    col = np.floor((gx - np.floor(gx)) * (GLYPH_COLS + 1)).astype(int)  # one blank column
    row = np.floor((y1 - ys) / (y1 - y0) * (GLYPH_ROWS + 2)).astype(int) - 1  # blank rows
    row_ok = (row >= 0) & (row < GLYPH_ROWS)
    col_ok = col < GLYPH_COLS
    bits = glyphs[
        letters[letter][None, :],
        np.clip(row, 0, GLYPH_ROWS - 1)[:, None],
        np.clip(col, 0, GLYPH_COLS - 1)[None, :],
    ]
    ink = board & bits & row_ok[:, None] & col_ok[None, :]
    region[ink] = colours[1]


def _paint_alley(canvas, alpha, ppm, x0_m, width_m, rng) -> None:
    """A gap between buildings: a darker, hazy building far behind."""
    rows, cols = canvas.shape[:2]
    total_h = rows / ppm
    far_h = rng.uniform(5.0, 16.0)
    c0, c1 = int(round(x0_m * ppm)), min(cols, int(round((x0_m + width_m) * ppm)))
    r0 = int(round((total_h - far_h) * ppm))
    canvas[r0:rows, c0:c1] = np.float32(rng.uniform(0.35, 0.55)) * np.array(
        [0.9, 0.95, 1.05], np.float32
    )
    alpha[r0:rows, c0:c1] = 255


def _paint_tree(canvas, alpha, ppm, x_m, rng) -> None:
    rows, cols = canvas.shape[:2]
    total_h = rows / ppm
    radius = rng.uniform(1.5, 3.0)
    trunk_h = rng.uniform(1.8, 3.0)
    cy = trunk_h + radius * 0.8
    c0, c1 = max(0, int((x_m - radius) * ppm)), min(cols, int((x_m + radius) * ppm) + 1)
    r0 = max(0, int((total_h - cy - radius) * ppm))
    if c1 <= c0:
        return
    xs = (np.arange(c0, c1) + 0.5) / ppm - x_m
    ys = total_h - (np.arange(r0, rows) + 0.5) / ppm
    # A lumpy canopy: the radius varies with the angle.
    angle = np.arctan2(ys[:, None] - cy, xs[None, :])
    lumps = 1 + 0.12 * np.sin(5 * angle + rng.uniform(0, 6.3)) + 0.08 * np.sin(9 * angle)
    dist = np.hypot(xs[None, :], ys[:, None] - cy)
    canopy = dist < radius * lumps
    trunk = (np.abs(xs) < 0.15)[None, :] & (ys < trunk_h + 0.5)[:, None]
    green = np.array([0.18, 0.38, 0.14], np.float32) * rng.uniform(0.7, 1.3)
    leaf = 0.8 + 0.4 * ((np.sin(xs * 13)[None, :] * np.sin(ys * 11)[:, None]) > 0.2)
    region = canvas[r0:rows, c0:c1]
    region[trunk] = [0.25, 0.18, 0.12]
    region[canopy] = (green[None, None, :] * leaf[:, :, None])[canopy]
    alpha[r0:rows, c0:c1][canopy | trunk] = 255


def _paint_lamp(canvas, alpha, ppm, x_m) -> None:
    rows, cols = canvas.shape[:2]
    total_h = rows / ppm
    c0, c1 = int((x_m - 0.08) * ppm), int((x_m + 0.08) * ppm) + 1
    r0 = int((total_h - 5.0) * ppm)
    canvas[r0:rows, max(c0, 0) : min(c1, cols)] = 0.12
    head = slice(max(0, int((x_m - 0.5) * ppm)), min(cols, int((x_m + 0.1) * ppm) + 1))
    canvas[r0 : r0 + max(1, int(0.2 * ppm)), head] = 0.12
    alpha[r0:rows, max(c0, 0) : min(c1, cols)] = 255


def make_facade(
    rng: np.random.Generator,
    length_m: float,
    pixels_per_m: float,
    glyphs: np.ndarray,
    height_m: float = 30.0,
    x_offset_m: float = 0.0,
) -> Facade:
    """Paints one side of a street.

    Args:
        rng: the random generator of this street side (seeded by the caller).
        length_m: length of the strip in metres.
        pixels_per_m: texture resolution.
        glyphs: the city's sign alphabet (`make_glyph_alphabet`).
        height_m: texture height; anything above is sky.
        x_offset_m: street coordinate of the strip's left end.

    Returns:
        The `Facade`.
    """
    rows, cols = int(np.ceil(height_m * pixels_per_m)), int(np.ceil(length_m * pixels_per_m))
    canvas = np.zeros((rows, cols, 3), np.float32)
    alpha = np.zeros((rows, cols), np.uint8)
    x = 0.0
    while x < length_m:
        style = _style(rng)
        for _ in range(int(rng.integers(1, 5))):  # a row of similar buildings
            if x >= length_m:
                break
            if rng.random() < 0.12:
                gap = rng.uniform(3.0, 6.0)
                _paint_alley(canvas, alpha, pixels_per_m, x, gap, rng)
                x += gap
            width = style["width"] * rng.uniform(0.85, 1.15)
            _paint_building(canvas, alpha, pixels_per_m, x, width, style, rng, glyphs)
            x += width
    for tree_x in np.cumsum(rng.uniform(8.0, 30.0, size=int(length_m / 8) + 2)):
        if tree_x < length_m:
            if rng.random() < 0.6:
                _paint_tree(canvas, alpha, pixels_per_m, tree_x, rng)
            else:
                _paint_lamp(canvas, alpha, pixels_per_m, tree_x)
    # Grime and weathering: darker towards the ground, a little per-texel noise.
    ys = height_m - (np.arange(rows) + 0.5) / pixels_per_m
    canvas *= (0.88 + 0.12 * np.clip(ys / 6.0, 0, 1)).astype(np.float32)[:, None, None]
    canvas += rng.normal(0, 0.015, size=canvas.shape).astype(np.float32)
    texture = np.empty((rows, cols, 4), np.uint8)
    texture[..., :3] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    texture[..., 3] = alpha
    return Facade(texture, float(pixels_per_m), float(x_offset_m), float(height_m))
