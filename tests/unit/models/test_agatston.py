"""Hand-computed cases for the reference Agatston calculator (models/agatston.py).

Every expected number is worked out by hand in the comment next to it; none is taken from the
code under test. Arrays are (z, y, x) with slices along axis 0. Unless a test says otherwise the
slice increment is 3 mm, so the normalisation factor increment / 3 mm is 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from models.agatston import (
    _FULL_26,
    _IN_PLANE_8,
    AgatstonResult,
    agatston,
    agatston_from_images,
    cac_drs,
    candidate_contributions,
    connected_components,
    density_weight,
    risk_category,
    rounded_score,
    voxel_contributions,
)
from models.labels import Label

LM = int(Label.CAC_LEFT_MAIN)  # 40
LAD = int(Label.CAC_LAD)  # 41
LCX = int(Label.CAC_LCX)  # 42
RCA = int(Label.CAC_RCA)  # 43

FINE = (3.0, 0.5, 0.5)  # 0.25 mm^2 pixels, 3 mm increment (normalisation 1)
COARSE = (3.0, 1.0, 1.0)  # 1.0 mm^2 pixels, 3 mm increment (normalisation 1)


def blank(shape=(1, 8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """An empty HU volume (all 0 HU) and an empty label map of the same shape."""
    return np.zeros(shape, dtype=np.int16), np.zeros(shape, dtype=np.uint8)


def paint(hu, labels, z, ys, xs, value, label=LAD):
    """Set HU and label on the rectangle rows ys x columns xs of slice z (slices are ranges)."""
    hu[z, ys, xs] = value
    labels[z, ys, xs] = label


# --------------------------------------------------------------------------------------------
# 1. The 1 mm^2 minimum component area
# --------------------------------------------------------------------------------------------


def test_three_fine_pixels_below_one_mm2_are_dropped():
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 3), slice(2, 5), 300)  # 1 x 3 pixels
    r = agatston(hu, lab, FINE)
    assert r.total == 0.0  # 3 px x 0.25 mm^2 = 0.75 mm^2 < 1.0 -> dropped
    assert r.volume_mm3 == 0.0  # dropped voxels are not counted in the volume either
    assert r.lesions == []


def test_four_fine_pixels_exactly_one_mm2_are_kept():
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), 250)  # 2 x 2 pixels
    r = agatston(hu, lab, FINE)
    assert r.total == pytest.approx(2.0)  # 4 px x 0.25 mm^2 = 1.0 mm^2, weight 2 -> 2.0
    assert r.per_artery["LAD"] == pytest.approx(2.0)
    assert r.volume_mm3 == pytest.approx(3.0)  # 4 vox x 0.25 mm^2 x 3 mm = 3.0 mm^3
    assert len(r.lesions) == 1


def test_four_fine_pixels_in_a_line_are_kept():
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 3), slice(1, 5), 150)  # 1 x 4 pixels
    r = agatston(hu, lab, FINE)
    assert r.total == pytest.approx(1.0)  # 4 px x 0.25 mm^2 = 1.0 mm^2, weight 1 -> 1.0


def test_single_one_mm_pixel_is_kept():
    hu, lab = blank()
    paint(hu, lab, 0, 4, 4, 450)
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(4.0)  # 1 px x 1.0 mm^2 = 1.0 mm^2, weight 4 -> 4.0
    assert r.volume_mm3 == pytest.approx(3.0)  # 1 vox x 1.0 mm^2 x 3 mm = 3.0 mm^3


def test_non_square_pixels_area_threshold():
    # 0.4 x 0.8 mm pixels: 0.32 mm^2 each.
    hu, lab = blank()
    paint(hu, lab, 0, slice(1, 2), slice(1, 4), 150)  # 3 px: 3 x 0.32 = 0.96 mm^2 -> dropped
    paint(hu, lab, 0, slice(5, 6), slice(1, 5), 150)  # 4 px: 4 x 0.32 = 1.28 mm^2 -> kept
    r = agatston(hu, lab, (3.0, 0.4, 0.8))
    assert r.total == pytest.approx(1.28)  # 1.28 mm^2 x weight 1 = 1.28
    assert len(r.lesions) == 1


# --------------------------------------------------------------------------------------------
# 2. Density weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (129, 0.0),  # below 130 HU: not a candidate at all -> 0
        (130, 4.0),  # 4 px x 1 mm^2 = 4 mm^2, weight 1 -> 4.0
        (199, 4.0),  # 4 mm^2 x weight 1 = 4.0
        (200, 8.0),  # 4 mm^2 x weight 2 = 8.0
        (299, 8.0),  # 4 mm^2 x weight 2 = 8.0
        (300, 12.0),  # 4 mm^2 x weight 3 = 12.0
        (399, 12.0),  # 4 mm^2 x weight 3 = 12.0
        (400, 16.0),  # 4 mm^2 x weight 4 = 16.0
        (1500, 16.0),  # 4 mm^2 x weight 4 = 16.0 (no weight above 4)
    ],
)
def test_weight_boundaries_uniform_component(peak, expected):
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), peak)  # 2 x 2 pixels of 1 x 1 mm, all at `peak`
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(expected)
    assert len(r.lesions) == (0 if peak < 130 else 1)


@pytest.mark.parametrize(
    ("peak", "weight"),
    [(130, 1), (199, 1), (200, 2), (299, 2), (300, 3), (399, 3), (400, 4), (2000, 4)],
)
def test_density_weight_function(peak, weight):
    assert int(density_weight(peak)) == weight


def test_density_weight_vectorised():
    np.testing.assert_array_equal(
        density_weight(np.array([130, 199.9, 200, 299.5, 300, 399, 400, 1000])),
        [1, 1, 2, 2, 3, 3, 4, 4],
    )


@pytest.mark.parametrize(("peak", "weight"), [(250, 2), (350, 3), (650, 4)])
def test_peak_weight_applies_to_whole_area(peak, weight):
    hu, lab = blank()
    # 2 x 3 pixels of 1 x 1 mm: five voxels at 130-150 HU and one at the peak.
    paint(hu, lab, 0, slice(2, 4), slice(2, 5), 0)
    hu[0, 2:4, 2:5] = [[130, 140, 150], [135, peak, 145]]
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(6.0 * weight)  # 6 px x 1 mm^2 = 6 mm^2 x weight(peak)
    assert r.lesions[0].peak_hu == peak


def test_voxel_at_129_next_to_component_not_in_area():
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), 210)  # 2 x 2 pixels at 210 HU
    paint(hu, lab, 0, slice(2, 4), slice(4, 5), 129)  # a labelled 129 HU column right beside it
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(8.0)  # 4 px (not 6) x 1 mm^2 x weight 2 = 8.0
    assert r.volume_mm3 == pytest.approx(12.0)  # 4 vox x 1 mm^2 x 3 mm = 12.0 mm^3
    assert r.lesions[0].area_mm2 == pytest.approx(4.0)


def test_129_voxel_does_not_bridge_two_small_components():
    # Two 2-pixel groups (0.5 mm^2 each) joined only through a 129 HU pixel: both dropped.
    hu, lab = blank()
    paint(hu, lab, 0, 3, slice(1, 3), 400)  # (3,1), (3,2)
    paint(hu, lab, 0, 3, 3, 129)  # (3,3): not a candidate
    paint(hu, lab, 0, 3, slice(4, 6), 400)  # (3,4), (3,5)
    r = agatston(hu, lab, FINE)
    assert r.total == 0.0  # 2 x 0.25 = 0.5 mm^2 < 1 for each group -> both dropped


def test_float_hu_threshold():
    hu, lab = blank()
    hu = hu.astype(np.float32)
    paint(hu, lab, 0, 1, 1, 129.9)  # just below 130 -> not counted
    paint(hu, lab, 0, 5, 5, 130.0)  # exactly 130 -> counted
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(1.0)  # 1 px x 1 mm^2 x weight 1 = 1.0


# --------------------------------------------------------------------------------------------
# 3. Slice-increment normalisation
# --------------------------------------------------------------------------------------------


def test_overlapping_reconstruction_gives_same_total():
    # 3 mm increment: the lesion (2 x 2 px of 1 mm, 250 HU) is on one slice.
    hu3, lab3 = blank((3, 6, 6))
    paint(hu3, lab3, 1, slice(2, 4), slice(2, 4), 250)
    r3 = agatston(hu3, lab3, (3.0, 1.0, 1.0))
    assert r3.total == pytest.approx(8.0)  # 4 mm^2 x w2 x (3/3) = 8.0
    assert r3.volume_mm3 == pytest.approx(12.0)  # 4 vox x 1 mm^2 x 3 mm = 12.0

    # 1.5 mm increment: the same lesion appears on two consecutive slices.
    hu15, lab15 = blank((6, 6, 6))
    for z in (2, 3):
        paint(hu15, lab15, z, slice(2, 4), slice(2, 4), 250)
    r15 = agatston(hu15, lab15, (1.5, 1.0, 1.0))
    assert r15.total == pytest.approx(8.0)  # 2 slices x 4 mm^2 x w2 x (1.5/3) = 8.0
    assert r15.volume_mm3 == pytest.approx(12.0)  # 8 vox x 1 mm^2 x 1.5 mm = 12.0
    assert r15.total == pytest.approx(r3.total)
    assert len(r15.lesions) == 1  # the two slices form one 3-D lesion


def test_half_increment_with_same_slices_halves_total():
    hu, lab = blank((3, 6, 6))
    paint(hu, lab, 1, slice(2, 4), slice(2, 4), 250)
    r3 = agatston(hu, lab, (3.0, 1.0, 1.0))
    r15 = agatston(hu, lab, (1.5, 1.0, 1.0))
    assert r3.total == pytest.approx(8.0)  # 4 mm^2 x w2 x 3/3 = 8.0
    assert r15.total == pytest.approx(4.0)  # 4 mm^2 x w2 x 1.5/3 = 4.0
    assert r15.volume_mm3 == pytest.approx(6.0)  # 4 vox x 1 mm^2 x 1.5 mm = 6.0
    assert r15.lesions[0].score == pytest.approx(4.0)


def test_increment_does_not_change_area_threshold():
    # The 1 mm^2 test is on in-plane area only; a 6 mm increment does not rescue 3 fine pixels.
    hu, lab = blank()
    paint(hu, lab, 0, 2, slice(2, 5), 300)
    r = agatston(hu, lab, (6.0, 0.5, 0.5))
    assert r.total == 0.0  # 3 x 0.25 = 0.75 mm^2 < 1 -> dropped whatever the increment


# --------------------------------------------------------------------------------------------
# 4. 8-connectivity in-plane, 26-connectivity for lesions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b_cols", "name"),
    [(slice(5, 7), "down-right diagonal"), (slice(1, 3), "down-left diagonal")],
)
def test_diagonal_groups_form_one_component(b_cols, name):
    hu, lab = blank((1, 10, 10))
    paint(hu, lab, 0, slice(2, 4), slice(3, 5), 150)  # A: rows 2-3, cols 3-4, 4 px at 150 HU
    paint(hu, lab, 0, 4, b_cols, 350)  # B: row 4, 2 px at 350 HU, touching A at a corner only
    r = agatston(hu, lab, FINE)
    # One component: 6 px x 0.25 = 1.5 mm^2, peak 350 -> weight 3 -> 4.5
    assert r.total == pytest.approx(4.5), name
    assert len(r.lesions) == 1
    assert r.lesions[0].area_mm2 == pytest.approx(1.5)  # 6 x 0.25


@pytest.mark.parametrize("b_cols", [slice(6, 8), slice(0, 2)])
def test_groups_separated_by_one_pixel_form_two_components(b_cols):
    hu, lab = blank((1, 10, 10))
    paint(hu, lab, 0, slice(2, 4), slice(3, 5), 150)  # A: 4 px at 150 HU
    paint(hu, lab, 0, 5, b_cols, 350)  # B: row 5 (a blank row and column between), 2 px
    r = agatston(hu, lab, FINE)
    # A: 4 x 0.25 = 1.0 mm^2 x w1 = 1.0; B: 2 x 0.25 = 0.5 mm^2 < 1 -> dropped. Total 1.0
    assert r.total == pytest.approx(1.0)
    assert len(r.lesions) == 1
    assert r.lesions[0].peak_hu == 150


def test_diagonal_single_pixels_joint_vs_separate():
    # 1 mm pixels so nothing is dropped; the joint peak decides the weight.
    hu, lab = blank()
    paint(hu, lab, 0, 2, 2, 150)
    paint(hu, lab, 0, 3, 3, 450)  # diagonal neighbour
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(8.0)  # one component: 2 mm^2 x w4 (peak 450) = 8.0

    hu, lab = blank()
    paint(hu, lab, 0, 2, 2, 150)
    paint(hu, lab, 0, 4, 4, 450)  # one empty pixel between
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(5.0)  # 1 mm^2 x w1 + 1 mm^2 x w4 = 1 + 4 = 5.0
    assert len(r.lesions) == 2


def test_adjacent_slices_not_merged_for_area_test():
    # 2 px on slice 0 and 2 px straight above on slice 1: 4 px in 3-D (1.0 mm^2 of pixels),
    # but each slice's component is only 2 x 0.25 = 0.5 mm^2 -> both dropped.
    hu, lab = blank((2, 6, 6))
    for z in (0, 1):
        paint(hu, lab, z, 2, slice(2, 4), 500)
    r = agatston(hu, lab, FINE)
    assert r.total == 0.0
    assert r.lesions == []
    assert r.volume_mm3 == 0.0


def test_adjacent_slices_form_one_lesion():
    # 4 px on each of two adjacent slices: two kept 2-D components, one 3-D lesion.
    hu, lab = blank((3, 6, 6))
    paint(hu, lab, 0, slice(1, 3), slice(1, 3), 160)  # slice 0: 4 px at 160 HU -> w1
    paint(hu, lab, 1, slice(2, 4), slice(2, 4), 320)  # slice 1: shifted by (1,1), 320 -> w3
    r = agatston(hu, lab, FINE)
    # Each slice weighted on its own peak: 1.0 mm^2 x 1 + 1.0 mm^2 x 3 = 4.0
    assert r.total == pytest.approx(4.0)
    assert len(r.lesions) == 1
    (lesion,) = r.lesions
    assert (lesion.first_slice, lesion.last_slice) == (0, 1)
    assert lesion.area_mm2 == pytest.approx(2.0)  # 1.0 + 1.0 mm^2
    assert lesion.peak_hu == 320
    assert lesion.score == pytest.approx(4.0)


def test_lesion_26_connectivity_through_slice_corner():
    # Slice 0 pixel (2,2) and slice 1 pixel (3,3): touch only at a 3-D corner -> one lesion.
    hu, lab = blank((2, 6, 6))
    paint(hu, lab, 0, 2, 2, 200)
    paint(hu, lab, 1, 3, 3, 200)
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(4.0)  # two 1 mm^2 components x w2 = 2 + 2 = 4.0
    assert len(r.lesions) == 1

    # Two slices apart: not connected -> two lesions.
    hu, lab = blank((3, 6, 6))
    paint(hu, lab, 0, 2, 2, 200)
    paint(hu, lab, 2, 3, 3, 200)
    r = agatston(hu, lab, COARSE)
    assert len(r.lesions) == 2


def test_lesion_not_joined_through_dropped_voxels():
    # Two kept 4-px components on slices 0 and 2, joined in 3-D only via a dropped 1-px
    # component on slice 1: dropped voxels are not counted, so there are two lesions.
    hu, lab = blank((3, 6, 6))
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), 200)
    paint(hu, lab, 1, 2, 2, 200)  # 1 px x 0.25 mm^2 = 0.25 mm^2 < 1 -> dropped
    paint(hu, lab, 2, slice(2, 4), slice(2, 4), 200)
    r = agatston(hu, lab, FINE)
    assert r.total == pytest.approx(4.0)  # 2 components x 1.0 mm^2 x w2 = 4.0
    assert len(r.lesions) == 2
    assert r.volume_mm3 == pytest.approx(6.0)  # 8 vox x 0.25 mm^2 x 3 mm = 6.0


# --------------------------------------------------------------------------------------------
# 5. Per-artery separation and labels that must not count
# --------------------------------------------------------------------------------------------


def test_touching_lad_and_lcx_score_separately():
    hu, lab = blank((1, 6, 8))
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), 250, LAD)  # LAD: 4 px, w2
    paint(hu, lab, 0, slice(2, 4), slice(4, 6), 450, LCX)  # LCX: 4 px right beside it, w4
    r = agatston(hu, lab, COARSE)
    assert r.per_artery["LAD"] == pytest.approx(8.0)  # 4 mm^2 x w2 = 8.0 (not w4 from LCX)
    assert r.per_artery["LCX"] == pytest.approx(16.0)  # 4 mm^2 x w4 = 16.0
    assert r.per_artery["RCA"] == 0.0
    assert r.total == pytest.approx(24.0)  # 8 + 16
    assert r.volume_per_artery_mm3 == pytest.approx({"LAD": 12.0, "LCX": 12.0, "RCA": 0.0})
    # 4 vox x 1 mm^2 x 3 mm = 12.0 each
    assert sorted(lesion.artery for lesion in r.lesions) == ["LAD", "LCX"]


def test_touching_halves_of_different_arteries_each_below_minimum():
    # LAD 2 px + LCX 2 px touching: 1.0 mm^2 together but 0.5 mm^2 per artery -> both dropped.
    hu, lab = blank()
    paint(hu, lab, 0, 3, slice(2, 4), 300, LAD)
    paint(hu, lab, 0, 3, slice(4, 6), 300, LCX)
    r = agatston(hu, lab, FINE)
    assert r.total == 0.0


def test_left_main_counts_as_lad():
    hu, lab = blank((2, 6, 6))
    paint(hu, lab, 0, slice(1, 3), slice(1, 3), 300, LM)  # LM: 4 px x 1 mm^2, w3 -> 12.0
    paint(hu, lab, 1, slice(1, 3), slice(1, 3), 150, RCA)  # RCA: 4 mm^2 x w1 -> 4.0
    r = agatston(hu, lab, COARSE)
    assert r.per_artery == pytest.approx({"LAD": 12.0, "LCX": 0.0, "RCA": 4.0})
    assert set(r.per_artery) == {"LAD", "LCX", "RCA"}
    assert r.total == pytest.approx(16.0)  # 12 + 4
    assert {lesion.artery for lesion in r.lesions} == {"LAD", "RCA"}


def test_left_main_and_lad_voxels_join_in_one_component():
    # LM is scored as LAD, so an LM half and an LAD half form one LAD component.
    hu, lab = blank()
    paint(hu, lab, 0, 3, slice(2, 4), 180, LM)  # 2 px x 0.25 = 0.5 mm^2
    paint(hu, lab, 0, 3, slice(4, 6), 420, LAD)  # 2 px x 0.25 = 0.5 mm^2
    r = agatston(hu, lab, FINE)
    assert r.per_artery["LAD"] == pytest.approx(4.0)  # 1.0 mm^2 x w4 (joint peak 420) = 4.0
    assert len(r.lesions) == 1


@pytest.mark.parametrize(
    "label",
    [
        int(Label.BACKGROUND),
        int(Label.HEART),
        int(Label.CORONARY_ARTERY),
        int(Label.AORTIC_WALL_CALCIFICATION),
        int(Label.AORTIC_VALVE_CALCIFICATION),
        int(Label.MITRAL_ANNULUS_CALCIFICATION),
        int(Label.VERTEBRAE),
        int(Label.PATIENT_TABLE),
    ],
)
def test_calcium_outside_coronary_labels_not_counted(label):
    hu, lab = blank()
    paint(hu, lab, 0, slice(1, 5), slice(1, 5), 800, label)  # 16 px of 800 HU, not coronary
    paint(hu, lab, 0, 6, 6, 200, RCA)  # 1 coronary pixel: 1 mm^2 x w2 = 2.0
    r = agatston(hu, lab, COARSE, calibration_mg_per_cm3_per_hu=1.0)
    assert r.total == pytest.approx(2.0)
    assert r.per_artery == pytest.approx({"LAD": 0.0, "LCX": 0.0, "RCA": 2.0})
    assert r.volume_mm3 == pytest.approx(3.0)  # 1 vox x 1 mm^2 x 3 mm
    assert r.mass_mg == pytest.approx(0.6)  # 1.0 x 200 HU x (3 mm^3 = 0.003 cm^3) = 0.6 mg
    assert len(r.lesions) == 1


def test_bright_neighbour_outside_label_does_not_raise_peak():
    # A 900 HU aortic voxel touching an LAD component must not change its weight.
    hu, lab = blank()
    paint(hu, lab, 0, slice(2, 4), slice(2, 4), 150, LAD)
    paint(hu, lab, 0, 2, 4, 900, int(Label.AORTIC_WALL_CALCIFICATION))
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(4.0)  # 4 mm^2 x w1 = 4.0 (not w4, not 5 mm^2)


def test_custom_artery_mapping():
    hu, lab = blank()
    paint(hu, lab, 0, 1, 1, 250, 7)
    r = agatston(hu, lab, COARSE, artery_of_label={7: "RCA"})
    assert r.per_artery["RCA"] == pytest.approx(2.0)  # 1 mm^2 x w2


# --------------------------------------------------------------------------------------------
# 6. Nothing to score
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty", "labels_but_no_calcium", "calcium_but_no_labels"])
def test_no_calcium(case):
    hu, lab = blank((4, 8, 8))
    if case == "labels_but_no_calcium":
        paint(hu, lab, 1, slice(0, 8), slice(0, 8), 129, LAD)
    elif case == "calcium_but_no_labels":
        paint(hu, lab, 1, slice(0, 8), slice(0, 8), 1000, 0)
    r = agatston(hu, lab, (1.5, 0.7, 0.7), calibration_mg_per_cm3_per_hu=0.8)
    assert r.total == 0.0
    assert r.per_artery == {"LAD": 0.0, "LCX": 0.0, "RCA": 0.0}
    assert r.volume_mm3 == 0.0
    assert r.volume_per_artery_mm3 == {"LAD": 0.0, "LCX": 0.0, "RCA": 0.0}
    assert r.lesions == []
    assert r.mass_mg == 0.0
    assert r.category == 0
    assert r.cacdrs == "A0"
    d = r.to_dict()
    assert d["agatston_total"] == 0.0
    assert d["category"] == 0
    assert d["category_name"] == "0"
    assert d["cacdrs"] == "A0"
    assert d["lesions"] == []


def test_mass_is_none_without_calibration():
    hu, lab = blank()
    paint(hu, lab, 0, 1, 1, 500)
    assert agatston(hu, lab, COARSE).mass_mg is None


def test_only_dropped_components_gives_zero():
    hu, lab = blank()
    paint(hu, lab, 0, 1, 1, 900)  # 1 px x 0.25 mm^2 -> dropped
    paint(hu, lab, 0, 5, 5, 900, RCA)  # idem
    r = agatston(hu, lab, FINE, calibration_mg_per_cm3_per_hu=1.0)
    assert r.total == 0.0
    assert r.mass_mg == 0.0  # dropped voxels do not count towards the mass either
    assert r.lesions == []


# --------------------------------------------------------------------------------------------
# 7. Volume, mass, categories, lesion fields
# --------------------------------------------------------------------------------------------


def test_volume_and_mass_hand_case():
    hu, lab = blank()
    hu[0, 2:4, 2:4] = [[200, 300], [400, 500]]
    lab[0, 2:4, 2:4] = LAD
    r = agatston(hu, lab, (2.0, 0.5, 0.5), calibration_mg_per_cm3_per_hu=0.8)
    # area 4 x 0.25 = 1.0 mm^2, peak 500 -> w4, x (2/3) -> 8/3
    assert r.total == pytest.approx(8.0 / 3.0)
    # voxel volume 0.25 mm^2 x 2 mm = 0.5 mm^3; 4 voxels -> 2.0 mm^3
    assert r.volume_mm3 == pytest.approx(2.0)
    # 0.8 mg/cm^3/HU x (200+300+400+500 = 1400 HU) x 0.0005 cm^3 = 0.56 mg
    assert r.mass_mg == pytest.approx(0.56)


def test_mass_excludes_dropped_and_unlabelled_voxels():
    hu, lab = blank()
    paint(hu, lab, 0, 1, 1, 300, LCX)  # 1 mm^2 x w3 -> kept, 300 HU
    paint(hu, lab, 0, 5, 5, 700, 5)  # heart label: not counted
    paint(hu, lab, 0, 5, 7, 100, RCA)  # below threshold: not counted
    r = agatston(hu, lab, (1.0, 1.0, 1.0), calibration_mg_per_cm3_per_hu=2.0)
    # 2.0 x 300 HU x (1 mm^3 = 0.001 cm^3) = 0.6 mg
    assert r.mass_mg == pytest.approx(0.6)
    assert r.volume_mm3 == pytest.approx(1.0)  # 1 vox x 1 mm^3
    assert r.total == pytest.approx(1.0)  # 1 mm^2 x w3 x (1/3) = 1.0


@pytest.mark.parametrize(
    ("score", "category", "drs"),
    [
        (0.0, 0, "A0"),  # rounds to 0
        (0.49, 0, "A0"),  # rounds to 0
        (0.5, 1, "A1"),  # rounds half up to 1
        (1.0, 1, "A1"),
        (10.0, 1, "A1"),  # 10 -> "1-10"
        (10.49, 1, "A1"),  # rounds to 10
        (10.5, 2, "A1"),  # rounds to 11 -> "11-100"
        (11.0, 2, "A1"),
        (99.4, 2, "A1"),  # rounds to 99 -> A1
        (99.5, 2, "A2"),  # rounds to 100 -> A2
        (100.0, 2, "A2"),  # 100 -> "11-100", A2 (100-299)
        (100.5, 3, "A2"),  # rounds to 101 -> "101-400"
        (101.0, 3, "A2"),
        (299.0, 3, "A2"),
        (299.5, 3, "A3"),  # rounds to 300 -> A3
        (300.0, 3, "A3"),
        (400.0, 3, "A3"),  # 400 -> "101-400"
        (400.49, 3, "A3"),  # rounds to 400
        (400.5, 4, "A3"),  # rounds to 401 -> ">400"
        (401.0, 4, "A3"),
        (2500.0, 4, "A3"),
    ],
)
def test_category_and_cacdrs_boundaries(score, category, drs):
    assert risk_category(score) == category
    assert cac_drs(score) == drs
    result = AgatstonResult(
        total=score,
        per_artery={"LAD": score, "LCX": 0.0, "RCA": 0.0},
        volume_mm3=0.0,
        volume_per_artery_mm3={"LAD": 0.0, "LCX": 0.0, "RCA": 0.0},
    )
    assert result.category == category
    assert result.cacdrs == drs
    names = ("0", "1-10", "11-100", "101-400", ">400")
    assert result.to_dict()["category_name"] == names[category]


@pytest.mark.parametrize(
    ("score", "rounded"),
    [(0.0, 0), (0.49, 0), (0.5, 1), (1.5, 2), (2.5, 3), (10.5, 11), (99.4, 99), (400.5, 401)],
)
def test_rounded_score_half_up(score, rounded):
    # half up, not Python's round-half-to-even (round(2.5) == 2)
    assert rounded_score(score) == rounded


def test_category_from_a_scored_volume():
    # 11 separate 1 mm pixels at 130 HU = 11 mm^2 x w1 = 11.0 -> category 2, A1
    hu, lab = blank((1, 4, 24))
    hu[0, 1, 0:22:2] = 130
    lab[0, 1, 0:22:2] = RCA
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(11.0)
    assert len(r.lesions) == 11
    assert r.category == 2
    assert r.cacdrs == "A1"


def test_lesion_fields_two_slice_lesion():
    hu, lab = blank((5, 10, 10))
    # Slice 2: rows 3-4, cols 5-6 (4 px) at 210 HU -> 4 x 0.25 = 1.0 mm^2, w2
    paint(hu, lab, 2, slice(3, 5), slice(5, 7), 210, LCX)
    # Slice 3: rows 3-5, cols 5-6 (6 px) at 150 HU, one at 420 -> 6 x 0.25 = 1.5 mm^2, w4
    paint(hu, lab, 3, slice(3, 6), slice(5, 7), 150, LCX)
    hu[3, 4, 6] = 420
    # A separate RCA lesion on slice 0: 4 px at 300 HU -> 1.0 mm^2 x w3
    paint(hu, lab, 0, slice(0, 2), slice(0, 2), 300, RCA)
    r = agatston(hu, lab, (1.5, 0.5, 0.5))

    assert len(r.lesions) == 2
    first, second = r.lesions  # sorted by first slice
    assert first.artery == "RCA"
    assert (first.first_slice, first.last_slice) == (0, 0)
    assert first.score == pytest.approx(1.5)  # 1.0 mm^2 x w3 x (1.5/3) = 1.5
    assert first.centroid_zyx == pytest.approx((0.0, 0.5, 0.5))

    lesion = second
    assert lesion.artery == "LCX"
    assert lesion.first_slice == 2
    assert lesion.last_slice == 3
    assert lesion.peak_hu == 420
    assert lesion.area_mm2 == pytest.approx(2.5)  # 1.0 + 1.5 mm^2
    assert lesion.score == pytest.approx(4.0)  # (1.0 x 2 + 1.5 x 4) x (1.5/3) = 8 x 0.5 = 4.0
    assert lesion.volume_mm3 == pytest.approx(3.75)  # 10 vox x 0.25 mm^2 x 1.5 mm = 3.75
    # centroid over 10 voxels: z (4x2 + 6x3)/10 = 2.6; y (3+3+4+4 + 3+3+4+4+5+5)/10 = 3.8;
    # x (5+6+5+6 + 3x(5+6))/10 = 55/10 = 5.5
    assert lesion.centroid_zyx == pytest.approx((2.6, 3.8, 5.5))

    assert r.per_artery == pytest.approx({"LAD": 0.0, "LCX": 4.0, "RCA": 1.5})
    assert r.total == pytest.approx(5.5)  # 4.0 + 1.5
    assert r.volume_mm3 == pytest.approx(5.25)  # 14 vox x 0.375 mm^3

    d = r.to_dict()
    assert d["agatston_total"] == pytest.approx(5.5)
    assert d["category"] == 1  # 5.5 rounds to 6 -> "1-10"
    assert d["cacdrs"] == "A1"
    assert d["lesions"][1]["peak_hu"] == 420
    assert d["lesions"][1]["first_slice"] == 2
    assert tuple(d["lesions"][1]["centroid_zyx"]) == pytest.approx((2.6, 3.8, 5.5))


# --------------------------------------------------------------------------------------------
# 8. SimpleITK images
# --------------------------------------------------------------------------------------------


def _image_case():
    hu, lab = blank((4, 6, 8))
    paint(hu, lab, 1, slice(1, 3), slice(1, 3), 250, LAD)
    paint(hu, lab, 2, slice(1, 3), slice(1, 3), 350, LAD)
    paint(hu, lab, 1, 4, slice(4, 8), 180, RCA)
    return hu, lab


@pytest.mark.parametrize("spacing_xyz", [(0.5, 0.5, 1.5), (0.4, 0.7, 2.0)])
def test_agatston_from_images_matches_array_call(spacing_xyz):
    hu, lab = _image_case()
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing(spacing_xyz)
    seg = sitk.GetImageFromArray(lab)
    seg.CopyInformation(ct)
    sx, sy, sz = spacing_xyz
    from_images = agatston_from_images(ct, seg, calibration_mg_per_cm3_per_hu=0.9)
    from_arrays = agatston(hu, lab, (sz, sy, sx), calibration_mg_per_cm3_per_hu=0.9)
    assert from_images.to_dict() == from_arrays.to_dict()


def test_agatston_from_images_hand_value():
    hu, lab = _image_case()
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((0.5, 0.5, 1.5))
    seg = sitk.GetImageFromArray(lab)
    seg.CopyInformation(ct)
    r = agatston_from_images(ct, seg)
    # pixel 0.25 mm^2, normalisation 1.5/3 = 0.5
    # LAD slice 1: 4 px = 1.0 mm^2 x w2 = 2; slice 2: 1.0 mm^2 x w3 = 3 -> (2+3) x 0.5 = 2.5
    # RCA slice 1: 4 px = 1.0 mm^2 x w1 = 1 -> 1 x 0.5 = 0.5
    assert r.per_artery == pytest.approx({"LAD": 2.5, "LCX": 0.0, "RCA": 0.5})
    assert r.total == pytest.approx(3.0)
    # 12 voxels x 0.25 mm^2 x 1.5 mm = 4.5 mm^3 (a z/x spacing swap would give a different value)
    assert r.volume_mm3 == pytest.approx(4.5)


# --------------------------------------------------------------------------------------------
# 9. Input validation
# --------------------------------------------------------------------------------------------


def test_shape_mismatch_raises():
    hu = np.zeros((2, 4, 4), dtype=np.int16)
    lab = np.zeros((2, 4, 5), dtype=np.uint8)
    with pytest.raises(ValueError):
        agatston(hu, lab, COARSE)


def test_not_3d_raises():
    with pytest.raises(ValueError):
        agatston(np.zeros((4, 4), np.int16), np.zeros((4, 4), np.uint8), COARSE)


@pytest.mark.parametrize("hu_value", [0, 500])
def test_negative_labels_raise(hu_value):
    hu, _ = blank()
    hu[:] = hu_value
    lab = np.zeros(hu.shape, dtype=np.int16)
    lab[0, 3, 3] = -1
    with pytest.raises(ValueError):
        agatston(hu, lab, COARSE)


def test_float_labels_raise():
    hu, _ = blank()
    with pytest.raises(ValueError):
        agatston(hu, np.zeros(hu.shape, dtype=np.float32), COARSE)


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (3.0, -0.5, 0.5), (3.0, 0.5, 0.0)])
def test_non_positive_spacing_raises(spacing):
    hu, lab = blank()
    with pytest.raises(ValueError):
        agatston(hu, lab, spacing)


# --------------------------------------------------------------------------------------------
# 10. connected_components at the array edges: no wrap-around
# --------------------------------------------------------------------------------------------


def test_connected_components_no_wrap_between_rows():
    # (y=1, x=last) and (y=2, x=0) are consecutive in flat (row-major) order but not neighbours.
    zyx = np.array([[0, 0], [1, 2], [7, 0]])
    component, count = connected_components(zyx, _IN_PLANE_8)
    assert count == 2
    # ... nor with the anti-diagonal offset (0, 1, -1): (y=1, x=0) vs (y=2, x=last)
    zyx = np.array([[0, 0], [1, 2], [0, 7]])
    component, count = connected_components(zyx, _IN_PLANE_8)
    assert count == 2


def test_connected_components_no_wrap_between_slices():
    # (z=0, y=last, x=last) and (z=1, y=0, x=0): consecutive in flat order, not 26-neighbours.
    zyx = np.array([[0, 1], [5, 0], [5, 0]])
    _, count = connected_components(zyx, _FULL_26)
    assert count == 2
    # In-plane connectivity never joins different slices, even straight above each other.
    zyx = np.array([[0, 1], [3, 3], [3, 3]])
    _, count = connected_components(zyx, _IN_PLANE_8)
    assert count == 2


def test_connected_components_basic_groups():
    # Three voxels in a diagonal chain plus one isolated voxel, all on slice 0.
    zyx = np.array([[0, 0, 0, 0], [0, 1, 2, 5], [0, 1, 2, 0]])
    component, count = connected_components(zyx, _IN_PLANE_8)
    assert count == 2
    assert component[0] == component[1] == component[2] != component[3]


def test_connected_components_single_voxel():
    component, count = connected_components(np.array([[3], [4], [5]]), _FULL_26)
    assert count == 1
    np.testing.assert_array_equal(component, [0])


def test_agatston_no_wrap_at_row_edge():
    # 0.5 mm pixels, 4 columns: A = rows 0-1 of the last column, B = rows 1-2 of column 0.
    # (0,3)/(1,0) and (1,3)/(2,0) are flat-adjacent, but A and B are 3 columns apart: each is
    # 2 x 0.25 = 0.5 mm^2 < 1 -> both dropped. Wrapping would join them into 1.0 mm^2 -> 4.0.
    hu, lab = blank((1, 4, 4))
    paint(hu, lab, 0, slice(0, 2), 3, 500)
    paint(hu, lab, 0, slice(1, 3), 0, 500)
    r = agatston(hu, lab, FINE)
    assert r.total == 0.0
    # Control: with 1 mm pixels nothing is dropped and they are still 2 components, 2 lesions.
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(16.0)  # 2 x (2 mm^2 x w4) = 16.0
    assert len(r.lesions) == 2


def test_agatston_no_wrap_at_slice_edge():
    # 1 mm pixels: (z=0, y=last, x=last) and (z=1, y=0, x=0) are two separate lesions.
    hu, lab = blank((2, 4, 4))
    paint(hu, lab, 0, 3, 3, 300)
    paint(hu, lab, 1, 0, 0, 300)
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(6.0)  # 2 x (1 mm^2 x w3) = 6.0
    assert len(r.lesions) == 2


def test_voxels_on_all_faces_of_the_volume():
    # Single 1 mm pixels at the eight corners of a 3 x 4 x 5 volume: eight separate lesions.
    hu, lab = blank((3, 4, 5))
    for z in (0, 2):
        for y in (0, 3):
            for x in (0, 4):
                paint(hu, lab, z, y, x, 200)
    r = agatston(hu, lab, COARSE)
    assert r.total == pytest.approx(16.0)  # 8 x (1 mm^2 x w2) = 16.0
    assert len(r.lesions) == 8


# --------------------------------------------------------------------------------------------
# Voxel contributions: the score's spatial distribution (training target of the score map)
# --------------------------------------------------------------------------------------------


def test_voxel_contributions_carry_the_component_weight_and_drop_small_components():
    hu, lab = blank((2, 8, 8))
    paint(hu, lab, 0, slice(0, 2), slice(0, 2), 150)  # 4 x 0.25 mm^2, peak 450 below
    hu[0, 0, 0] = 450
    paint(hu, lab, 1, 5, slice(5, 8), 400, RCA)  # 0.75 mm^2: below 1 mm^2, dropped
    parts = voxel_contributions(hu, lab, (1.5, 0.5, 0.5))
    zyx, share = parts["LAD"]
    assert zyx.shape == (3, 4)
    # Every voxel of the component carries its peak's weight: 0.25 mm^2 x 4 x 1.5/3.
    np.testing.assert_allclose(share, 0.5)
    assert parts["RCA"][1].size == 0 and parts["LCX"][1].size == 0


def test_voxel_contributions_sum_to_the_artery_scores():
    rng = np.random.default_rng(7)
    hu = rng.integers(-100, 700, size=(6, 24, 24)).astype(np.int16)
    lab = rng.choice([0, LM, LAD, LCX, RCA], size=hu.shape).astype(np.uint8)
    result = agatston(hu, lab, (2.0, 0.7, 0.7))
    parts = voxel_contributions(hu, lab, (2.0, 0.7, 0.7))
    for artery, score in result.per_artery.items():
        assert parts[artery][1].sum() == pytest.approx(score)


def test_candidate_contributions_score_every_candidate_as_one_artery():
    # The same voxels as the labelled calculator with every voxel labelled LAD.
    rng = np.random.default_rng(11)
    hu = rng.integers(-100, 700, size=(6, 24, 24)).astype(np.int16)
    where, share = candidate_contributions(hu, (2.0, 0.7, 0.7))
    zyx, expected = voxel_contributions(hu, np.full(hu.shape, LAD, np.uint8), (2.0, 0.7, 0.7))[
        "LAD"
    ]
    order = np.argsort(np.ravel_multi_index(zyx, hu.shape))
    np.testing.assert_array_equal(where, np.ravel_multi_index(zyx, hu.shape)[order])
    np.testing.assert_allclose(share, expected[order])


def test_candidate_contributions_drop_specks_and_weigh_by_the_component_peak():
    hu, _ = blank((2, 8, 8))
    hu[0, 0:2, 0:2] = 150  # 4 x 0.25 mm^2 = 1 mm^2, kept; peak 450 -> weight 4
    hu[0, 0, 0] = 450
    hu[1, 5, 5:8] = 400  # 0.75 mm^2: below 1 mm^2, dropped
    hu[1, 0, 0] = 129  # below the threshold
    where, share = candidate_contributions(hu, (1.5, 0.5, 0.5))
    assert sorted(where) == [0, 1, 8, 9]
    np.testing.assert_allclose(share, 0.25 * 4 * 1.5 / 3)  # 0.5 each, as the labelled case
    assert candidate_contributions(np.zeros((1, 4, 4), np.int16), FINE)[1].size == 0
