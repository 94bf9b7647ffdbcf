"""The coronary region: a box on the score grid around the located heart centre."""

from __future__ import annotations

import numpy as np
import pytest

from models.calcium.coronary_region import inside_region, region_mask
from models.calcium.preprocess import SCORE_SIZE_XYZ, SCORE_SPACING_MM

REGION = {"low": [-60.0, -45.0, -30.0], "high": [40.0, 50.0, 70.0]}  # x y z mm


def grid_offsets(mask: np.ndarray) -> np.ndarray:
    """z, y, x offsets (mm) from the grid centre of the mask's nonzero voxels."""
    centre = (np.asarray(SCORE_SIZE_XYZ[::-1]) - 1) / 2
    return (np.argwhere(mask > 0) - centre) * np.asarray(SCORE_SPACING_MM[::-1])


def test_mask_is_the_box_around_the_grid_centre() -> None:
    mask = region_mask(REGION)
    assert mask.shape == SCORE_SIZE_XYZ[::-1]
    offsets = grid_offsets(mask)
    assert inside_region(offsets, REGION["low"], REGION["high"]).all()
    # Along each axis it reaches each bound to within one voxel, and no further.
    for axis, lo, hi in zip((2, 1, 0), REGION["low"], REGION["high"], strict=True):
        spacing = SCORE_SPACING_MM[::-1][axis]
        assert lo <= offsets[:, axis].min() < lo + spacing
        assert hi - spacing < offsets[:, axis].max() <= hi
    # Every grid voxel whose centre is inside the box is in the mask: its volume is the box's.
    volume = mask.sum() * np.prod(SCORE_SPACING_MM)
    assert volume == pytest.approx(100 * 95 * 100, rel=0.05)


def test_mask_refuses_a_box_without_the_heart_centre() -> None:
    with pytest.raises(ValueError, match="heart centre"):
        region_mask({"low": [-60.0, 5.0, -30.0], "high": [40.0, 50.0, 70.0]})
