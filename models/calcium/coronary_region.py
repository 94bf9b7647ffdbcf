"""Where coronary calcium can lie: an ellipsoid around the located heart centre.

The candidate-score prior (networks.PRIORS) offers the score network every bright voxel of the
192 x 192 x 180 mm box at its full Agatston value, so a single presence error on a structure
the training phantoms lack (on the real negative control: calcified foci at the level of the
aortic arch, 70-90 mm from the located heart) costs that structure's whole score. Coronary
arteries run on the surface of the heart; calcium far from the heart is not coronary whatever
the network says. The score map is therefore set to zero outside an ellipsoid around the
located heart centre (the centre of the score grid), before the artery sums, so the score,
the category and the decision feedback all come from the same voxels.

The ellipsoid's semi-axes are a manifest key (`score.coronary_region_mm`, x y z in mm; absent:
no region, version 1.0 and earlier). They are chosen from the training phantoms, not from the
test data: the extent of the truth's own score around the true heart centre plus a margin
for the error of the heart's location (training/calcium/coronary_extent.py; the model card
gives the figures). The network still sees the whole box: only what it may count is limited.
"""

from __future__ import annotations

import numpy as np

from models.calcium.preprocess import SCORE_SIZE_XYZ, SCORE_SPACING_MM


def region_mask(semi_axes_mm_xyz, size_xyz=SCORE_SIZE_XYZ) -> np.ndarray:
    """(z, y, x) float32 mask on the score grid: 1 inside the ellipsoid centred on the grid's
    centre with these semi-axes (mm, x y z), 0 outside."""
    axes = []
    for size, spacing, semi_axis in zip(size_xyz, SCORE_SPACING_MM, semi_axes_mm_xyz, strict=True):
        if semi_axis <= 0:
            raise ValueError(f"semi-axes must be positive, got {semi_axes_mm_xyz}")
        axes.append(((np.arange(size) - (size - 1) / 2) * spacing / semi_axis) ** 2)
    x, y, z = axes
    inside = z[:, None, None] + y[None, :, None] + x[None, None, :] <= 1.0
    return inside.astype(np.float32)


def normalised_radius(offsets_mm_zyx: np.ndarray, semi_axes_mm_xyz) -> np.ndarray:
    """For (N, 3) z, y, x offsets from the centre (mm): 1 on the ellipsoid, < 1 inside."""
    semi_axes_zyx = np.asarray(semi_axes_mm_xyz, dtype=float)[::-1]
    return np.sqrt(((np.asarray(offsets_mm_zyx, dtype=float) / semi_axes_zyx) ** 2).sum(axis=1))
