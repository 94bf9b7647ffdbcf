"""Feedback regions: the threshold the SEG and the overlay share."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from models.calcium.result import CalciumResult
from node.results.regions import MIN_DENSITY_AU_PER_MM3, feedback_per_slice, feedback_regions


def scan(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    ct = sitk.Image([20, 16, 12], sitk.sitkFloat32)
    ct.SetSpacing((0.5, 0.5, 2.0))  # 0.5 mm^3 voxels
    ct.SetOrigin((-5.0, -4.0, 10.0))
    ct.SetDirection(direction)
    return ct


def result_with(feedback: dict[str, sitk.Image], total: float = 5.0) -> CalciumResult:
    return CalciumResult(total, {"LAD": total, "LCX": 0.0, "RCA": 0.0}, 1, "A1", [], [0, 0, 0],
                         {}, feedback)  # fmt: skip


def part_of(ct: sitk.Image, values: np.ndarray, index_xyz=(3, 2, 1)) -> sitk.Image:
    """A feedback sub-grid of `ct` starting at voxel `index_xyz` (values in z, y, x order)."""
    part = sitk.GetImageFromArray(values.astype(np.float32))
    part.SetSpacing(ct.GetSpacing())
    part.SetDirection(ct.GetDirection())
    part.SetOrigin(ct.TransformIndexToPhysicalPoint(index_xyz))
    return part


def test_threshold_is_a_density_placed_on_the_scan_grid() -> None:
    ct = scan()
    voxel = 0.5
    values = np.zeros((3, 4, 5))
    values[0, 0, 0] = MIN_DENSITY_AU_PER_MM3 * voxel  # exactly at the threshold: in
    values[1, 2, 3] = 0.99 * MIN_DENSITY_AU_PER_MM3 * voxel  # just under: out
    values[2, 3, 4] = voxel / 3  # a fully counted weight-1 voxel: in
    regions = feedback_regions(result_with({"LAD": part_of(ct, values)}), ct)
    assert set(regions) == {"LAD", "LCX", "RCA"}
    assert not regions["LCX"].any() and not regions["RCA"].any()
    assert regions["LAD"].shape == (12, 16, 20)
    assert sorted(map(tuple, np.argwhere(regions["LAD"]))) == [(1, 2, 3), (3, 5, 7)]
    per_slice = feedback_per_slice(result_with({"LAD": part_of(ct, values)}), ct)
    assert per_slice.shape == (12,)
    assert per_slice[1] == pytest.approx(values[0].sum()) and per_slice[0] == 0


def test_feedback_off_the_scan_grid_is_refused() -> None:
    ct = scan()
    part = part_of(ct, np.ones((2, 2, 2)))
    part.SetOrigin([v + 0.2 for v in part.GetOrigin()])
    with pytest.raises(ValueError, match="grid"):
        feedback_regions(result_with({"LAD": part}), ct)
    outside = part_of(ct, np.ones((2, 2, 2)), index_xyz=(19, 0, 0))
    with pytest.raises(ValueError, match="beyond"):
        feedback_regions(result_with({"LAD": outside}), ct)


def test_feet_first_grid() -> None:
    ct = scan(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    values = np.zeros((1, 1, 2))
    values[0, 0, 1] = 1.0
    regions = feedback_regions(result_with({"RCA": part_of(ct, values, (4, 5, 6))}), ct)
    assert [tuple(v) for v in np.argwhere(regions["RCA"])] == [(6, 5, 5)]
