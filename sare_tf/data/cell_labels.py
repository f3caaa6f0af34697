"""Geographic cells as class labels (Vo et al., "Revisiting IM2GPS in the Deep Learning Era",
ICCV 2017, as the SARE paper's appendix sets it up for its comparison).

The training database positions are binned into `cell_m` x `cell_m` squares (25 m) of a fixed
grid aligned to multiples of `cell_m` in the UTM frame, so a position always falls in the same
cell whatever else is in the dataset; only cells holding at least one image exist (empty cells
are removed), numbered in the lexicographic order of their grid indices: the labels are the same
in every run on the same data.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class GeoCells:
    """Attributes:
    labels: `[N]` int32 class of each position.
    cells: `[C, 2]` int64 grid indices (floor(east / cell_m), floor(north / cell_m)) of the
        non-empty cells, label order.
    cell_m: cell side in metres.
    """

    labels: np.ndarray
    cells: np.ndarray
    cell_m: float

    @property
    def num_cells(self) -> int:
        return len(self.cells)


def assign_cells(positions, cell_m: float = 25.0) -> GeoCells:
    """Bins `[N, 2]` metric positions into the non-empty `cell_m` grid cells.

    Raises:
        ValueError: no positions, a non-positive cell size, or non-finite positions.
    """
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
        raise ValueError(f"`positions` must be [N > 0, 2]. Received: shape={positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("`positions` has non-finite values.")
    if not (np.isfinite(cell_m) and cell_m > 0):
        raise ValueError(f"`cell_m` must be a positive size in metres. Received: {cell_m!r}")
    grid = np.floor(positions / cell_m).astype(np.int64)
    cells, labels = np.unique(grid, axis=0, return_inverse=True)
    return GeoCells(labels.reshape(-1).astype(np.int32), cells, float(cell_m))
