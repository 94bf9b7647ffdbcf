"""Where coronary calcium can lie: an axis-aligned box around the located heart centre.

The candidate-score prior (networks.PRIORS) offers the score network every bright voxel of the
192 x 192 x 180 mm box at its full Agatston value, so a single presence error on a structure
the training phantoms lack (on the real negative control: a calcified mediastinal focus at the
level of the aortic arch, 74 mm above the located heart centre and some 45 mm above the aortic
root) costs that structure's whole score. Coronary arteries run on the surface of the heart;
calcium far from the heart is not coronary whatever the network says. The score map is
therefore set to zero outside a box around the located heart centre (the centre of the score
grid), before the artery sums, so the score, the category and the decision feedback all come
from the same voxels.

A box, not an ellipsoid: over many phantoms (hearts of varied size and orientation) the
truth's score fills the corners of its per-axis range, so the ellipsoid holding it is about
1.3 times wider than that range along every axis and reaches the aortic arch.

The box is a manifest key (`score.coronary_region_mm`: {"low": [x, y, z], "high": [x, y, z]},
mm from the located heart centre; absent: no region, version 1.0 and earlier). It is chosen
from the training phantoms: the per-axis range of the truth's own score around the true heart
centre, widened on every side by the error of the heart's location
(training/calcium/coronary_extent.py; the model card gives the figures). The network still
sees the whole box of the score grid: only what it may count is limited.
"""

from __future__ import annotations

import numpy as np

from models.calcium.preprocess import SCORE_SIZE_XYZ, SCORE_SPACING_MM


def region_bounds(region_mm: dict) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) x y z mm arrays of a manifest's `coronary_region_mm`, checked."""
    low = np.asarray(region_mm["low"], dtype=float)
    high = np.asarray(region_mm["high"], dtype=float)
    if low.shape != (3,) or high.shape != (3,) or not np.all(low < 0) or not np.all(high > 0):
        raise ValueError(f"the region must hold the heart centre (low < 0 < high), got {region_mm}")
    return low, high


def inside_region(offsets_mm_zyx: np.ndarray, low_xyz, high_xyz) -> np.ndarray:
    """For (N, 3) z, y, x offsets from the located heart centre (mm): True inside the box."""
    offsets = np.asarray(offsets_mm_zyx, dtype=float)
    low_zyx = np.asarray(low_xyz, dtype=float)[::-1]
    high_zyx = np.asarray(high_xyz, dtype=float)[::-1]
    return np.all((offsets >= low_zyx) & (offsets <= high_zyx), axis=1)


def region_mask(region_mm: dict, size_xyz=SCORE_SIZE_XYZ) -> np.ndarray:
    """(z, y, x) float32 mask on the score grid: 1 where a voxel centre lies inside the box
    (bounds relative to the grid's centre), 0 outside."""
    low, high = region_bounds(region_mm)
    inside_axes = []
    for size, spacing, lo, hi in zip(size_xyz, SCORE_SPACING_MM, low, high, strict=True):
        offset = (np.arange(size) - (size - 1) / 2) * spacing
        inside_axes.append((offset >= lo) & (offset <= hi))
    x, y, z = inside_axes
    inside = z[:, None, None] & y[None, :, None] & x[None, None, :]
    return inside.astype(np.float32)
