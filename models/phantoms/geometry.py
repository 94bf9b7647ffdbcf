"""Image grid of a synthetic axial CT series, in DICOM patient coordinates (LPS, mm).

x grows towards the patient's left, y towards the back, z towards the head. Axial series only:
rows run along +x (head first) or -x (feet first), columns along +y, slices along +z or -z.
Arrays are indexed (slice, row, column) = (k, j, i), as SimpleITK's GetArrayFromImage gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]  # (slices, rows, columns)
    spacing: tuple[float, float, float]  # (x: column spacing, y: row spacing, z: slice increment)
    origin: tuple[float, float, float]  # world position of voxel (0, 0, 0)
    row_sign: int  # +1: columns run towards +x (HFS); -1: towards -x (FFS)
    slice_sign: int  # +1: slice index grows towards +z; -1: towards -z

    @property
    def direction(self) -> tuple[float, ...]:
        """SimpleITK direction matrix (row-major 3x3)."""
        return (self.row_sign, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, self.slice_sign)

    def x(self) -> np.ndarray:
        """World x of each column."""
        return self.origin[0] + self.row_sign * self.spacing[0] * np.arange(self.shape[2])

    def y(self) -> np.ndarray:
        return self.origin[1] + self.spacing[1] * np.arange(self.shape[1])

    def z(self) -> np.ndarray:
        return self.origin[2] + self.slice_sign * self.spacing[2] * np.arange(self.shape[0])

    def to_image(self, array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def index_range(coords: np.ndarray, low: float, high: float) -> slice:
    """Index slice of the monotonic coordinate vector `coords` that lies within [low, high]."""
    inside = np.flatnonzero((coords >= low) & (coords <= high))
    if inside.size == 0:
        return slice(0, 0)
    return slice(int(inside[0]), int(inside[-1]) + 1)
