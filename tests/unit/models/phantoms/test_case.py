"""The synthetic chest CT generator: reproducibility, ground truth, ranges and DICOM output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from models.agatston import agatston, agatston_from_images
from models.labels import UNET_CHANNELS, Label
from models.phantoms.acquisition import KVP_CHOICES, PROTOCOLS, sample_acquisition
from models.phantoms.anatomy import sample_patient
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.writer import write_case
from tests.tools import dicom_truth_matches_nifti

SMALL = CaseOptions(matrix=160, protocol=(3.0, 1.5), n_slices=None)


def truth_fields(result) -> dict:
    d = result.to_dict()
    keys = ("agatston_total", "agatston_per_artery", "volume_mm3", "category", "cacdrs", "lesions")
    return {k: d[k] for k in keys}


def read_json_truth(folder: Path) -> dict:
    doc = json.loads((folder / "truth.json").read_text())
    for lesion in doc["lesions"]:
        lesion.pop("centroid_mm")
        lesion["centroid_zyx"] = tuple(lesion["centroid_zyx"])
    return {k: doc[k] for k in truth_fields_keys()}


def truth_fields_keys():
    return ("agatston_total", "agatston_per_artery", "volume_mm3", "category", "cacdrs", "lesions")


@pytest.fixture(scope="module")
def written_case(tmp_path_factory) -> tuple:
    case = generate_case(11, 3, SMALL)
    folder = write_case(case, tmp_path_factory.mktemp("phantom") / "case_0000", dicom=True)
    return case, folder


def test_same_seed_gives_the_same_case() -> None:
    options = CaseOptions(matrix=96, protocol=(2.5, 2.5), n_slices=70)
    a, b = generate_case(5, 2, options), generate_case(5, 2, options)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert a.truth == b.truth
    c = generate_case(6, 2, options)
    assert not np.array_equal(a.image, c.image)


def test_truth_json_matches_recomputation_from_written_nifti(written_case) -> None:
    case, folder = written_case
    image = sitk.ReadImage(str(folder / "image.nii.gz"))
    labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
    assert image.GetPixelID() == sitk.sitkInt16
    recomputed = agatston_from_images(image, labels)
    stored = json.loads((folder / "truth.json").read_text())
    assert stored["agatston_total"] == recomputed.total  # exactly, not approximately
    assert stored["agatston_per_artery"] == recomputed.per_artery
    assert stored["volume_mm3"] == recomputed.volume_mm3
    assert stored["category"] == recomputed.category == 3
    assert stored["cacdrs"] == recomputed.cacdrs
    assert [les["score"] for les in stored["lesions"]] == [les.score for les in recomputed.lesions]
    assert stored["agatston_total"] == case.truth.total


def test_dicom_series_reads_back_with_the_nifti_geometry_and_truth(written_case) -> None:
    case, folder = written_case
    assert dicom_truth_matches_nifti(folder) == case.truth.total


@pytest.mark.parametrize("category", range(5))
def test_requested_category_is_reached(category: int) -> None:
    case = generate_case(100 + category, category, CaseOptions(matrix=256, protocol=(3.0, 3.0)))
    assert case.truth.category == category
    lesion_voxels = np.isin(case.labels, [40, 41, 42, 43])
    assert lesion_voxels.any() == (category > 0)
    # Annotated lesion voxels are calcium by definition: at least 130 HU in the final image.
    assert (case.image[lesion_voxels] >= 130).all()


def test_confounders_are_bright_but_do_not_count() -> None:
    case = generate_case(21, 4, CaseOptions(matrix=256, protocol=(2.5, 2.5)))
    confounder = np.isin(case.labels, [50, 51, 52])
    assert confounder.any() and (case.image[confounder] >= 130).all()
    relabelled = np.where(confounder, np.uint8(Label.CAC_LAD), case.labels)
    spacing = case.spacing_zyx
    assert agatston(case.image, relabelled, spacing).total > case.truth.total
    assert agatston(case.image, case.labels, spacing).total == case.truth.total
    # Bone is far brighter than 130 HU and is never labelled as coronary calcium.
    bone = np.isin(case.labels, [Label.VERTEBRAE, Label.RIBS, Label.STERNUM])
    assert np.median(case.image[bone]) > 200


INCIDENTAL = (
    Label.LYMPH_NODE_CALCIFICATION,
    Label.AIRWAY_CARTILAGE_CALCIFICATION,
    Label.LUNG_GRANULOMA_CALCIFICATION,
)


def test_incidental_calcifications_are_common_bright_and_never_coronary() -> None:
    options = CaseOptions(matrix=128, protocol=(2.5, 2.5))
    seen = set()
    for seed in range(30, 42):
        case = generate_case(seed, 0, options)  # category 0: no coronary calcium at all
        present = {Label(v) for v in np.unique(case.labels)} & set(INCIDENTAL)
        for label in present:
            assert (case.image[case.labels == label] >= 130).all()
        assert case.truth.total == 0
        seen |= present
        if seen == set(INCIDENTAL):
            break
    assert seen == set(INCIDENTAL), f"12 cases showed only {seen}"


def test_incidental_calcifications_leave_the_rest_of_a_case_as_version_1_made_it() -> None:
    """They come from a random stream of their own: without them (CaseOptions.incidental
    False, as generator version 1 made the case) the anatomy, scan, noise, lesions and truth
    are the same."""
    options = CaseOptions(matrix=128, protocol=(2.5, 2.5))
    with_them = generate_case(33, 3, options)
    assert any(c.label in INCIDENTAL for c in with_them.calcifications)
    without = generate_case(33, 3, CaseOptions(matrix=128, protocol=(2.5, 2.5), incidental=False))
    assert not np.isin(without.labels, INCIDENTAL).any()
    assert without.truth == with_them.truth
    lesions = [c for c in with_them.calcifications if c.label not in INCIDENTAL]
    assert [c.to_dict() for c in without.calcifications] == [c.to_dict() for c in lesions]
    untouched = ~np.isin(with_them.labels, INCIDENTAL)
    assert (with_them.image == without.image)[untouched].mean() > 0.99


def test_noise_level_matches_the_protocol() -> None:
    case = generate_case(3, 0, CaseOptions(matrix=512, protocol=(5.0, 5.0)))
    liver = ndimage.binary_erosion(case.labels == Label.LIVER, iterations=4)
    if liver.sum() < 2000:  # this seed's liver dome must be in the field
        pytest.fail("test case has no liver interior to measure noise in")
    measured = float(case.image[liver].std())
    assert measured == pytest.approx(case.acquisition.noise_sd_hu, rel=0.2)


def test_anatomy_has_plausible_hu() -> None:
    case = generate_case(8, 2, CaseOptions(matrix=256, protocol=(2.5, 2.5)))
    median = {
        lab: float(np.median(case.image[case.labels == lab]))
        for lab in Label
        if (case.labels == lab).any()
    }
    assert -950 < median[Label.LEFT_LUNG] < -750
    assert -950 < median[Label.RIGHT_LUNG] < -750
    assert -140 < median[Label.SUBCUTANEOUS_FAT] < -60
    assert 20 < median[Label.HEART] < 70
    assert 20 < median[Label.AORTA] < 70
    assert median[Label.VERTEBRAE] > 150
    assert median[Label.TRACHEA] < -600  # air lumen dominates
    assert median[Label.EPICARDIAL_FAT] < -30


def test_sampled_acquisitions_cover_the_required_ranges() -> None:
    seen = {"position": set(), "sharp": set(), "kvp": set(), "protocol": set()}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        width = float(rng.uniform(260, 440))
        kvp = float(rng.choice(KVP_CHOICES))
        patient = sample_patient(rng, width, kvp)
        low, high = patient.heart_bounds(margin=3.0)
        acq = sample_acquisition(rng, width, low, high, patient.centre_xy, kvp)
        assert 0.5 <= acq.pixel_spacing_mm <= 0.98
        coverage = (acq.n_slices - 1) * acq.slice_increment_mm
        assert 150 - acq.slice_increment_mm <= coverage <= 350 + acq.slice_increment_mm
        z_last = acq.z_first + coverage
        assert acq.z_first <= low[2] and z_last >= high[2], "the whole heart is scanned"
        half_fov = acq.matrix * acq.pixel_spacing_mm / 2
        assert np.all(np.abs(low[:2] - acq.recon_centre_xy) < half_fov)
        assert np.all(np.abs(high[:2] - acq.recon_centre_xy) < half_fov)
        assert 8 <= acq.noise_sd_hu <= 40
        assert 0.625 <= acq.slice_increment_mm <= acq.slice_thickness_mm <= 5.0
        offset = np.subtract(acq.recon_centre_xy, patient.centre_xy)
        assert np.all(np.abs(offset) <= 30 + 1e-9) or acq.pixel_spacing_mm < 0.75
        seen["position"].add(acq.patient_position)
        seen["sharp"].add(acq.sharp_kernel)
        seen["kvp"].add(acq.kvp)
        seen["protocol"].add((acq.slice_thickness_mm, acq.slice_increment_mm))
    assert seen["position"] == {"HFS", "FFS"}
    assert seen["sharp"] == {True, False}
    assert seen["kvp"] == set(KVP_CHOICES)
    assert seen["protocol"] == set(PROTOCOLS)
    assert any(t > i for t, i in seen["protocol"]), "overlapping reconstructions are sampled"


def test_feet_first_geometry_is_right_handed_and_mirrored() -> None:
    for seed in range(50):
        case = generate_case(seed, 0, CaseOptions(matrix=64, protocol=(5.0, 5.0), n_slices=40))
        if case.acquisition.patient_position == "FFS":
            break
    else:
        pytest.fail("no feet-first case among 50 seeds")
    assert case.grid.direction == (-1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1)
    # The heart lies on the patient's left (+x): with columns running towards -x it sits in
    # the lower column indices.
    heart_columns = np.nonzero(case.labels == Label.HEART)[2]
    assert heart_columns.mean() < case.grid.shape[2] / 2 + 10


def test_label_values_follow_the_published_unet_channels() -> None:
    names = [label.name for label in UNET_CHANNELS]
    assert names[0] == "AORTA" and names[4] == "HEART" and names[21] == "TRACHEA"
    assert [int(label) - 1 for label in UNET_CHANNELS] == list(range(22))


def test_slice_profile_matches_a_gaussian_filter_with_nearest_edges() -> None:
    from dataclasses import replace

    from models.phantoms.acquisition import slice_profile_blur

    case = generate_case(1, 0, CaseOptions(matrix=64, protocol=(5.0, 2.5), n_slices=70))
    acq = replace(case.acquisition, slice_thickness_mm=5.0, slice_increment_mm=2.5)
    volume = np.random.default_rng(1).standard_normal((12, 16, 16)).astype(np.float32)
    sigma = 5.0 / 2.355 / 2.5
    expected = ndimage.gaussian_filter1d(volume, sigma, axis=0, mode="nearest", truncate=3)
    assert np.abs(slice_profile_blur(volume, acq) - expected).max() < 1e-5
