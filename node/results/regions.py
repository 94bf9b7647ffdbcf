"""Decision-feedback regions: the voxels that carry an artery's calcium score.

The score network's feedback map (CalciumResult.feedback) gives Agatston units per scan voxel on
a sub-grid of the scan. A region is where that map, as a density in Agatston units per mm^3 of
tissue, reaches MIN_DENSITY_AU_PER_MM3:

* Why a density: a voxel that the Agatston rule counts in full carries pixel area x weight x
  increment / 3 mm, i.e. weight / 3 AU per mm^3 (1/3 to 4/3), whatever the scan's spacing, so
  one threshold means the same on every scan.
* Why 0.01 AU/mm^3: a thirty-third of the lowest density of counted calcium, so on an exact map
  (the reference calculator's voxel contributions) every counted voxel is in the region and
  nothing else is. The network predicts on 3 x 3 x 2.5 mm cells (22.5 mm^3) that the feedback
  spreads linearly over the scan's voxels: a cell must hold at least 0.23 AU to show, below the
  half unit that rounding would report, and the region ends within one cell of where the score
  is. Cells without candidate calcium (no native voxel at 130 HU) are exactly zero, and
  inference leaves out cells under 0.01 AU (FEEDBACK_MIN_CELL_AU) before resampling.
* Why not a fraction of the maximum: a dense lesion would hide a faint one in the same artery,
  and an artery scored 0 would have its noise floor drawn as a region.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from models.calcium.result import CalciumResult
from models.labels import ARTERIES

MIN_DENSITY_AU_PER_MM3 = 0.01


def feedback_regions(
    result: CalciumResult,
    ct: sitk.Image,
    min_density_au_per_mm3: float = MIN_DENSITY_AU_PER_MM3,
) -> dict[str, np.ndarray]:
    """Boolean (slice, row, column) masks on the whole scan grid, one per artery in ARTERIES
    order; an artery without a feedback map gets an empty mask."""
    shape = ct.GetSize()[::-1]
    voxel_mm3 = float(np.prod(ct.GetSpacing()))
    regions = {}
    for artery in ARTERIES:
        mask = np.zeros(shape, dtype=bool)
        part = result.feedback.get(artery)
        if part is not None:
            # Work on the sub-grid (the score box), not on a full-size float copy of the scan.
            k0, j0, i0 = _offset_zyx(part, ct)
            density = sitk.GetArrayViewFromImage(part) / voxel_mm3
            inside = density >= min_density_au_per_mm3
            nz, ny, nx = inside.shape
            mask[k0 : k0 + nz, j0 : j0 + ny, i0 : i0 + nx] = inside
        regions[artery] = mask
    return regions


def feedback_per_slice(result: CalciumResult, ct: sitk.Image) -> np.ndarray:
    """Agatston units of all arteries' feedback per scan slice (length: number of slices)."""
    totals = np.zeros(ct.GetSize()[2])
    for part in result.feedback.values():
        k0, _, _ = _offset_zyx(part, ct)
        per_slice = sitk.GetArrayViewFromImage(part).sum(axis=(1, 2), dtype=np.float64)
        totals[k0 : k0 + per_slice.size] += per_slice
    return totals


def _offset_zyx(part: sitk.Image, ct: sitk.Image) -> tuple[int, int, int]:
    """Where a feedback sub-grid starts in the scan's array, checked to lie on the grid."""
    if part.GetSize() and not np.allclose(part.GetSpacing(), ct.GetSpacing(), rtol=1e-5):
        raise ValueError("feedback map spacing differs from the scan's")
    if not np.allclose(part.GetDirection(), ct.GetDirection(), atol=1e-6):
        raise ValueError("feedback map direction differs from the scan's")
    index = ct.TransformPhysicalPointToContinuousIndex(part.GetOrigin())
    rounded = [int(round(v)) for v in index]
    if max(abs(v - r) for v, r in zip(index, rounded, strict=True)) > 0.01:
        raise ValueError("feedback map origin is not on the scan's grid")
    if any(r < 0 for r in rounded) or any(
        r + n > m for r, n, m in zip(rounded, part.GetSize(), ct.GetSize(), strict=True)
    ):
        raise ValueError("feedback map extends beyond the scan")
    i, j, k = rounded
    return k, j, i
