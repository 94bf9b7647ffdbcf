"""The lesion box the coronary region is fitted from (training/calcium/coronary_extent.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.calcium.coronary_region import inside_region
from training.calcium.coronary_extent import lesion_box


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
