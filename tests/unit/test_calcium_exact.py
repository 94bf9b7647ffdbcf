"""The exact scoring method's labelling and scoring (models/calcium/exact.py), torch-free.

Small hand-made scans with exact answers: a candidate component split by the network's decision
is labelled voxel by voxel and each part is scored by the definition; presence is read at the
nearest score cell; the coronary region and the threshold leave candidates unlabelled.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from models.agatston import agatston, voxel_contributions
from models.calcium.exact import (
    CandidatePresence,
    candidate_presence,
    exact_score,
    label_array,
    label_candidates,
)
from models.calcium.preprocess import score_grid
from models.labels import Label


def _candidates(hu: np.ndarray, presence_of_voxel, spacing=(0.5, 0.5, 3.0)) -> CandidatePresence:
    """All candidates of `hu` inside the region, with presence given per (z, y, x) voxel."""
    region = sitk.GetImageFromArray(hu)
    region.SetSpacing(spacing)
    where = np.flatnonzero(hu >= 130)
    zyx = np.stack(np.unravel_index(where, hu.shape)).T
    presence = np.array([presence_of_voxel(*p) for p in zyx], dtype=np.float32)
    return CandidatePresence(
        region=region,
        hu=hu,
        where=where,
        presence=presence,
        outside=np.zeros(0, np.int64),
        presence_outside=np.zeros((0, 3), np.float32),
    )


def test_a_component_split_by_the_decision_is_labelled_and_scored_per_voxel() -> None:
    """One 2-D component (4 x 8 pixels, one slice) whose left half the network calls LAD and
    right half LCX: two components of 4 x 4, each with its own peak's density weight."""
    hu = np.zeros((3, 12, 12), np.int16)
    hu[1, 2:6, 2:6] = 250  # left half: weight 2
    hu[1, 2:6, 6:10] = 450  # right half: weight 4 (the whole component's peak)
    hu[1, 2, 2] = 320  # the left half's own peak: weight 3

    def presence(z, y, x):
        return (0.9, 0.1, 0.05) if x < 6 else (0.2, 0.8, 0.1)

    candidates = _candidates(hu, presence)
    artery = label_candidates(candidates.presence, 0.5)
    labels = label_array(hu.shape, candidates.where, artery)
    assert set(np.unique(labels[1, 2:6, 2:6])) == {Label.CAC_LAD}
    assert set(np.unique(labels[1, 2:6, 6:10])) == {Label.CAC_LCX}

    exact = exact_score(candidates, 0.5)
    area = 16 * 0.25  # mm^2 per half
    assert exact.result.per_artery == pytest.approx({"LAD": area * 3, "LCX": area * 4, "RCA": 0})
    # ... which is not the whole component's score (32 pixels x weight 4): the split matters.
    assert exact.result.total != pytest.approx(32 * 0.25 * 4)
    assert exact.result.volume_per_artery_mm3 == pytest.approx(
        {"LAD": 16 * 0.75, "LCX": 16 * 0.75, "RCA": 0.0}
    )
    # The definition on the labelled voxels, and the feedback is its per-voxel contributions.
    assert exact.result == agatston(hu, labels, (3.0, 0.5, 0.5))
    for name, image in exact.feedback.items():
        assert image.GetSpacing() == (0.5, 0.5, 3.0)
        assert float(sitk.GetArrayViewFromImage(image).sum()) == pytest.approx(
            exact.result.per_artery[name]
        )


def test_below_the_threshold_a_candidate_stays_unlabelled() -> None:
    presence = np.array([[0.6, 0.3, 0.1], [0.4, 0.45, 0.3], [0.2, 0.2, 0.95]], np.float32)
    assert label_candidates(presence, 0.5).tolist() == [0, -1, 2]
    assert label_candidates(presence, 0.3).tolist() == [0, 1, 2]  # the highest, not the first
    assert label_candidates(np.zeros((0, 3), np.float32), 0.5).tolist() == []


def test_nothing_labelled_scores_zero_without_feedback() -> None:
    hu = np.zeros((2, 8, 8), np.int16)
    hu[0, 2:5, 2:5] = 500
    exact = exact_score(_candidates(hu, lambda z, y, x: (0.1, 0.2, 0.3)), 0.5)
    assert exact.result.total == 0.0 and exact.feedback == {}


def test_presence_is_read_at_the_nearest_score_cell_and_the_region_limits_it() -> None:
    """A 1 mm scan, a 4 x 4 x 4 score grid of 3 x 3 x 2.5 mm around its centre whose LAD
    presence numbers its cells: each candidate gets the number of the cell nearest to it."""
    hu = np.full((40, 40, 40), -100, np.int16)
    points = [(20, 20, 20), (18, 21, 23), (22, 17, 19), (24, 24, 24)]  # z, y, x; last: outside
    for p in points:
        hu[p] = 400
    ct = sitk.GetImageFromArray(hu)
    centre = np.array([20.0, 20.0, 20.0])  # x y z mm (origin 0, spacing 1)
    grid = np.zeros((3, 4, 4, 4), np.float32)
    grid[0] = np.arange(64).reshape(4, 4, 4) / 64.0
    region = {"low": [-3.0, -3.0, -3.0], "high": [3.0, 3.0, 3.0]}
    candidates = candidate_presence(ct, centre, grid, region)
    ref = score_grid(centre, (4, 4, 4))
    expected = {}
    for z, y, x in points:
        cell = np.rint((np.array([x, y, z]) - ref.GetOrigin()) / ref.GetSpacing()).astype(int)
        if np.all((cell >= 0) & (cell < 4)):
            expected[(z, y, x)] = grid[0, cell[2], cell[1], cell[0]]
    got = {
        tuple(int(v) for v in np.unravel_index(w, candidates.hu.shape)): p[0]
        for w, p in zip(candidates.where, candidates.presence, strict=True)
    }
    # The region is a sub-grid of the scan; indices there are offset from the scan's.
    offset = np.array(candidates.region.GetOrigin())[::-1].astype(int)
    got = {tuple(np.array(k) + offset): v for k, v in got.items()}
    inside = {p: v for p, v in expected.items() if np.all(np.abs(np.array(p) - 20) <= 3)}
    assert got == pytest.approx(inside)
    assert len(candidates.outside) == len(expected) - len(inside) >= 1


def test_contributions_agree_with_the_reference_on_a_split_lesion() -> None:
    """voxel_contributions of the labelled voxels is what the feedback images hold."""
    hu = np.zeros((4, 10, 10), np.int16)
    hu[1:3, 3:7, 3:7] = 180
    hu[2, 5, 5] = 600
    candidates = _candidates(hu, lambda z, y, x: (0.7, 0.1, 0.1) if z == 1 else (0.1, 0.1, 0.9))
    exact = exact_score(candidates, 0.5)
    labels = label_array(hu.shape, candidates.where, label_candidates(candidates.presence, 0.5))
    reference = voxel_contributions(hu, labels, (3.0, 0.5, 0.5))
    for artery, (zyx, value) in reference.items():
        image = sitk.GetArrayFromImage(exact.feedback[artery])
        assert float(image.sum()) == pytest.approx(float(value.sum()))
        assert np.count_nonzero(image) == zyx.shape[1]
    assert exact.result.per_artery["LAD"] == pytest.approx(16 * 0.25 * 1 * 1.0)
    assert exact.result.per_artery["RCA"] == pytest.approx(16 * 0.25 * 4 * 1.0)
