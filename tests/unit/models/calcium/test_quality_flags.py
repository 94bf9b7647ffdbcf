"""models/calcium/inference.py: the quality flags' measures (how much of a box around the heart
lies inside the scan; whether the alignment is trusted)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from models.calcium.inference import MIN_HEART_NCC, MIN_NCC, alignment_trusted, fraction_inside


def _scan(direction: tuple[float, ...]) -> sitk.Image:
    image = sitk.Image(50, 60, 40, sitk.sitkInt16)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(direction)
    return image


def _per_point(image: sitk.Image, centre, low, high, steps: int = 15) -> float:
    """The same fraction, one SimpleITK transform per lattice point."""
    axes = [np.linspace(c + lo, c + hi, steps) for c, lo, hi in zip(centre, low, high, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    size = np.asarray(image.GetSize())
    inside = 0
    for p in points:
        index = np.asarray(image.TransformPhysicalPointToContinuousIndex(p.tolist()))
        inside += bool(np.all(index >= -0.5) and np.all(index <= size - 0.5))
    return inside / len(points)


@pytest.mark.parametrize(
    "direction",
    [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1), (0, 1, 0, -1, 0, 0, 0, 0, 1)],
    ids=["head-first", "feet-first", "rotated"],
)
def test_fraction_inside_agrees_with_simpleitk_for_any_orientation(direction) -> None:
    image = _scan(tuple(float(v) for v in direction))
    low, high = np.array([-30.0, -40.0, -50.0]), np.array([30.0, 40.0, 50.0])
    for index in ((5, 30, 3), (25, 30, 20), (49, 0, 39)):
        centre = np.asarray(image.TransformIndexToPhysicalPoint(index))
        expected = _per_point(image, centre, low, high)
        assert fraction_inside(image, centre, low, high) == pytest.approx(expected)
    inner = np.asarray(image.TransformIndexToPhysicalPoint((25, 30, 20)))
    assert fraction_inside(image, inner, low / 10, high / 10) == 1.0
    assert fraction_inside(image, inner + 1000.0, low, high) == 0.0


def test_a_poor_whole_grid_correlation_is_trusted_only_when_the_heart_search_vouches() -> None:
    assert alignment_trusted(MIN_NCC, None)
    assert alignment_trusted(MIN_NCC, 0.0)  # the whole grid correlates: the search is not asked
    low = MIN_NCC - 0.1  # a small field of view fills little of the 400 mm grid
    assert alignment_trusted(low, MIN_HEART_NCC)
    assert not alignment_trusted(low, MIN_HEART_NCC - 0.01)
    assert not alignment_trusted(low, None)  # no heart search (a 1.0 manifest)
    assert not alignment_trusted(-1.0, 0.99)  # a transform at the network's limits
