"""Seeded synthetic place-recognition descriptors with geometry, for retrieval benchmarks.

Places sit on a square grid (`spacing_m` apart). Appearance is hierarchical, like a city of
repeated building styles: each style is a random unit vector; a place's appearance is its
style plus its own random direction scaled by `place_spread`, normalised; an image taken at a
place is that appearance plus isotropic Gaussian noise of norm `noise`, normalised, at a
position jittered by up to `jitter_m` metres. Database and query images come from the same
places, so a query's correct answers (within 25 m) are the images of its place (sometimes of a
neighbouring one too), and retrieval errors come from confusable places of the same style (the
usual failure of place recognition: repetitive structures). `place_spread` and `noise` set how
hard the task is; the defaults (0.45 and (D / 256)^(1/4)) keep exact Recall@1 around 0.85-0.9
for 10^4-10^5 database images at D = 256 and D = 4096.

Rows are generated in chunks straight into float32 arrays (or `.npy` memory maps): memory stays
at the output size.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def _unit_rows(rng, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


@dataclasses.dataclass
class SyntheticPlaceDescriptors:
    """A seeded generator of database and query descriptors with UTM positions.

    Attributes:
        dim: descriptor size D.
        num_places: distinct places.
        places_per_style: places sharing one appearance style (on average).
        place_spread: how far a place's appearance is from its style (relative norm).
        noise: norm of the per-image appearance noise (None: (D / 256)^(1/4)).
        spacing_m: grid spacing of places in metres.
        jitter_m: images lie within +-jitter_m of their place in x and y.
        seed: everything follows from it.

    Example:
        >>> synthetic = SyntheticPlaceDescriptors(dim=64, num_places=100)
        >>> xb, db_utm = synthetic.sample(1000, seed_offset=1)
        >>> xq, query_utm = synthetic.sample(100, seed_offset=2)
    """

    dim: int = 4096
    num_places: int = 10_000
    places_per_style: int = 12
    place_spread: float = 0.45
    noise: float | None = None
    spacing_m: float = 30.0
    jitter_m: float = 5.0
    seed: int = 0

    def __post_init__(self):
        if self.dim < 1 or self.num_places < 1 or self.places_per_style < 1:
            raise ValueError(
                "`dim`, `num_places` and `places_per_style` must be positive. Received: "
                f"dim={self.dim}, num_places={self.num_places}, "
                f"places_per_style={self.places_per_style}"
            )
        if self.noise is None:
            self.noise = (self.dim / 256.0) ** 0.25
        rng = np.random.default_rng(self.seed)
        num_styles = max(1, self.num_places // self.places_per_style)
        styles = _unit_rows(rng, num_styles, self.dim)
        self.place_style = rng.integers(0, num_styles, size=self.num_places)
        centres = _unit_rows(rng, self.num_places, self.dim)
        centres *= np.float32(self.place_spread)
        centres += styles[self.place_style]
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        self.centres = centres
        side = math.ceil(math.sqrt(self.num_places))
        grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), axis=-1)
        self.place_utm = grid.reshape(-1, 2)[: self.num_places].astype(np.float64) * self.spacing_m

    def sample(self, count: int, seed_offset: int, out=None, chunk: int = 8192):
        """Draws `count` images: `(descriptors float32 [count, D], utm float64 [count, 2])`.

        Args:
            count: number of images.
            seed_offset: stream id (use different ones for database and queries).
            out: optional preallocated `[count, D]` float32 array (e.g. a memmap) to fill.
            chunk: rows generated at once.

        Returns:
            Unit-norm descriptors and positions. The places drawn are kept in
            `self.last_place_ids`.
        """
        rng = np.random.default_rng([self.seed, seed_offset])
        places = rng.integers(0, self.num_places, size=count)
        descriptors = np.empty((count, self.dim), np.float32) if out is None else out
        scale = np.float32(self.noise / math.sqrt(self.dim))
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            block = rng.standard_normal((stop - start, self.dim), dtype=np.float32)
            block *= scale
            block += self.centres[places[start:stop]]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            descriptors[start:stop] = block
        utm = self.place_utm[places] + rng.uniform(-self.jitter_m, self.jitter_m, size=(count, 2))
        self.last_place_ids = places
        return descriptors, utm
