"""The voxel grid of a case, and how it is turned for writing.

Everything is built on a canonical array (slice, row, column) = (z, y, x) in patient LPS
millimetres: x towards the patient's left, y posterior, z towards the head, slices in
ascending z. Only when a case is written is the array turned to the patient position's
orientation (feet-first and prone scans store their pixels mirrored), so the geometry code
has one frame to reason in and the truth, which does not depend on orientation, is computed
once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Row and column direction cosines per patient position, as scanners write them for axial
# slices, and whether the written slice order runs down (normal = row x column = -z).
ORIENTATIONS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "HFS": ((1, 0, 0), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, -1, 0)),
}


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]  # (z, y, x)
    spacing: tuple[float, float, float]  # (slice increment, row, column) mm
    origin: tuple[float, float, float]  # (x, y, z) mm of voxel [0, 0, 0]

    def axis(self, axis: int) -> np.ndarray:
        """Positions (mm) along array axis 0 (z), 1 (y) or 2 (x), float32."""
        start = self.origin[2 - axis]
        return (start + self.spacing[axis] * np.arange(self.shape[axis])).astype(np.float32)

    def index_box(self, low_xyz, high_xyz) -> tuple[slice, slice, slice] | None:
        """Array slices (z, y, x) of the voxels whose centres lie in the mm box, or None."""
        box = []
        for axis in range(3):
            lo = (low_xyz[2 - axis] - self.origin[2 - axis]) / self.spacing[axis]
            hi = (high_xyz[2 - axis] - self.origin[2 - axis]) / self.spacing[axis]
            start, stop = max(int(np.ceil(lo)), 0), min(int(np.floor(hi)) + 1, self.shape[axis])
            if stop <= start:
                return None
            box.append(slice(start, stop))
        return tuple(box)

    def coords(self, box: tuple[slice, slice, slice]):
        """Broadcastable z, y, x coordinate arrays (mm) of a box."""
        z = self.axis(0)[box[0]][:, None, None]
        y = self.axis(1)[box[1]][None, :, None]
        x = self.axis(2)[box[2]][None, None, :]
        return z, y, x

    def sub(self, box: tuple[slice, slice, slice]) -> Grid:
        """The grid of a box of this one (same spacing)."""
        start = [b.start for b in box]
        origin = (
            self.origin[0] + start[2] * self.spacing[2],
            self.origin[1] + start[1] * self.spacing[1],
            self.origin[2] + start[0] * self.spacing[0],
        )
        return Grid(tuple(b.stop - b.start for b in box), self.spacing, origin)


def oriented(array: np.ndarray, position: str) -> np.ndarray:
    """The canonical array as stored for a patient position (a view, mirrored as needed)."""
    row, col = ORIENTATIONS[position]
    normal = np.cross(row, col)
    flips = []
    if row[0] < 0:
        flips.append(2)
    if col[1] < 0:
        flips.append(1)
    if normal[2] < 0:
        flips.append(0)
    return np.flip(array, axis=tuple(flips)) if flips else array


def oriented_geometry(grid: Grid, position: str) -> tuple[list[float], list[float]]:
    """(origin (x, y, z) of the stored array's first voxel, direction matrix row-major with
    columns = row direction, column direction, slice normal) for a patient position."""
    row, col = ORIENTATIONS[position]
    normal = np.cross(row, col)
    corner = []
    for axis_xyz, cosine in ((0, row[0]), (1, col[1]), (2, normal[2])):
        array_axis = 2 - axis_xyz
        first = grid.origin[axis_xyz]
        last = first + grid.spacing[array_axis] * (grid.shape[array_axis] - 1)
        corner.append(last if cosine < 0 else first)  # mirrored: the stored array starts there
    direction = np.stack([row, col, normal], axis=1).astype(float)
    return [float(v) for v in corner], direction.ravel().tolist()


def to_image(array: np.ndarray, grid: Grid, position: str = "HFS") -> sitk.Image:
    """A SimpleITK image of a canonical array, stored as the patient position stores it."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(oriented(array, position)))
    origin, direction = oriented_geometry(grid, position)
    image.SetSpacing((grid.spacing[2], grid.spacing[1], grid.spacing[0]))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image
