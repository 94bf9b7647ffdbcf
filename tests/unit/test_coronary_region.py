"""The coronary region: an ellipsoid on the score grid around the located heart centre."""

from __future__ import annotations

import numpy as np
import pytest

from models.calcium.coronary_region import normalised_radius, region_mask
from models.calcium.preprocess import SCORE_SIZE_XYZ, SCORE_SPACING_MM
from training.calcium.coronary_extent import lesion_ellipsoid


def test_mask_is_the_ellipsoid_around_the_grid_centre() -> None:
    mask = region_mask((60.0, 45.0, 30.0))
    assert mask.shape == SCORE_SIZE_XYZ[::-1]
    centre = (np.asarray(SCORE_SIZE_XYZ[::-1]) - 1) / 2
    zyx = np.argwhere(mask > 0)
    offsets = (zyx - centre) * np.asarray(SCORE_SPACING_MM[::-1])
    assert normalised_radius(offsets, (60.0, 45.0, 30.0)).max() <= 1.0
    # Along each axis it reaches its semi-axis to within one voxel, and no further.
    for axis, semi_axis in zip((2, 1, 0), (60.0, 45.0, 30.0), strict=True):
        reach = np.abs(offsets[:, axis]).max()
        assert semi_axis - SCORE_SPACING_MM[::-1][axis] < reach <= semi_axis
    # Its volume is the ellipsoid's, within the voxel discretisation.
    volume = mask.sum() * np.prod(SCORE_SPACING_MM)
    assert volume == pytest.approx(4 / 3 * np.pi * 60 * 45 * 30, rel=0.05)


def test_mask_refuses_nonsense_axes() -> None:
    with pytest.raises(ValueError, match="positive"):
        region_mask((60.0, 0.0, 30.0))


def test_lesion_ellipsoid_holds_every_offset() -> None:
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, [15, 25, 25], size=(500, 3))  # z, y, x mm
    axes = lesion_ellipsoid(offsets)
    assert normalised_radius(offsets, axes).max() == pytest.approx(1.0)
    # Tighter than a sphere through the farthest point along the narrow (z) axis.
    assert axes[2] < np.linalg.norm(offsets, axis=1).max()
