"""The voxels of a CT within a sphere around the located heart centre.

The image checks that judge a series before it is scored (contrast.py: the blood pool;
noise.py: the image noise) both look at a sphere of the same radius around the heart centre
from the registration: mostly cardiac chambers and myocardium, the most homogeneous soft
tissue of a chest CT, whatever the field of view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

SPHERE_RADIUS_MM = 40.0


@dataclass(frozen=True)
class SphereBox:
    """The scan's box around a sphere and which of its voxels lie inside the sphere."""

    image: sitk.Image  # the box of the scan (its own voxels, spacing and direction)
    inside: np.ndarray  # (z, y, x) bool, True inside the sphere

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.image.GetSpacing())) / 1000.0


def sphere_box(
    ct: sitk.Image, centre_mm: Sequence[float], radius_mm: float = SPHERE_RADIUS_MM
) -> SphereBox | None:
    """The box of `ct` around the sphere (clipped to the scan); None when under 4 voxels of
    it remain along an axis (off the scan, or too thin a slab to smooth and measure)."""
    size = np.asarray(ct.GetSize())
    spacing = np.asarray(ct.GetSpacing())
    centre = np.asarray(ct.TransformPhysicalPointToContinuousIndex([float(v) for v in centre_mm]))
    # The direction matrix is a rotation, so radius / spacing voxels along each index axis
    # cover the sphere.
    reach = radius_mm / spacing
    low = np.maximum(np.floor(centre - reach).astype(int), 0)
    high = np.minimum(np.ceil(centre + reach).astype(int) + 1, size)
    if np.any(high - low < 4):
        return None
    box = ct[int(low[0]) : int(high[0]), int(low[1]) : int(high[1]), int(low[2]) : int(high[2])]
    dx, dy, dz = [
        (np.arange(lo, hi) - c) * s for lo, hi, c, s in zip(low, high, centre, spacing, strict=True)
    ]
    inside = dz[:, None, None] ** 2 + dy[None, :, None] ** 2 + dx[None, None, :] ** 2
    return SphereBox(image=box, inside=inside <= radius_mm**2)
