"""The coronary region: a box on the score grid around the located heart centre."""

from __future__ import annotations

import numpy as np
import pytest

from models.calcium.coronary_region import inside_region, region_mask
from models.calcium.preprocess import SCORE_SIZE_XYZ, SCORE_SPACING_MM
from training.calcium.coronary_extent import lesion_box

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


def test_lesion_box_holds_every_offset() -> None:
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, [15, 25, 25], size=(500, 3))  # z, y, x mm
    low, high = lesion_box(offsets, np.ones(len(offsets)))
    assert np.allclose(low, offsets.min(axis=0)[::-1]) and np.allclose(high, offsets.max(0)[::-1])
    assert inside_region(offsets, low, high).all()


def test_lesion_box_quantile_holds_that_share_of_the_weight() -> None:
    rng = np.random.default_rng(4)
    offsets = rng.normal(0, [15, 25, 25], size=(2000, 3))
    offsets[:10] = [200.0, 0.0, 0.0]  # a few far outliers: they must not set the region
    weights = rng.uniform(0.1, 2.0, len(offsets))
    low, high = lesion_box(offsets, weights, quantile=0.99)
    inside = inside_region(offsets, low, high)
    # Each axis drops at most 1 % of the weight, so the box keeps at least 97 % of it.
    assert 0.97 <= weights[inside].sum() / weights.sum() < 0.995
    assert high[2] < 100.0  # the every-voxel rule would reach the outliers at 200 mm
    assert lesion_box(offsets, weights)[1][2] == 200.0
    with pytest.raises(ValueError, match="quantile"):
        lesion_box(offsets, weights, quantile=0.0)
