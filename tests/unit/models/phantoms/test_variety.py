"""Generator version 3, the broad variety: what it adds varies as documented, devices never
count, every lesion shape is calcium the score counts, and version 2 is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from models.agatston import agatston
from models.labels import Label
from models.phantoms import calcium, devices
from models.phantoms.anatomy import _CourseVariation, coronary_tree, sample_patient
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.variety import BROAD, LESION_SHAPES, STANDARD

SMALL = dict(matrix=128, protocol=(2.5, 2.5))
LESIONS = [Label.CAC_LEFT_MAIN, Label.CAC_LAD, Label.CAC_LCX, Label.CAC_RCA]


def test_the_standard_variety_is_generator_version_2() -> None:
    default = generate_case(11, 3, CaseOptions(**SMALL))
    standard = generate_case(11, 3, CaseOptions(**SMALL, variety=STANDARD))
    broad = generate_case(11, 3, CaseOptions(**SMALL, variety=BROAD))
    assert np.array_equal(default.image, standard.image)
    assert (default.generator_version, broad.generator_version) == ("2", "3")
    assert not np.array_equal(default.image, broad.image)
    assert broad.patient["dominance"] in ("right", "left", "codominant")


def test_course_variation_draws_every_dominance_and_none_without_a_stream() -> None:
    assert _CourseVariation.sample(None) == _CourseVariation()  # version 2: no change
    rng = np.random.default_rng(0)
    drawn = [_CourseVariation.sample(rng).dominance for _ in range(200)]
    shares = {d: drawn.count(d) / len(drawn) for d in set(drawn)}
    assert set(shares) == {"right", "left", "codominant"}
    assert 0.55 < shares["right"] < 0.85


class _Mediastinum:
    """The two landmarks coronary_tree reads."""

    aortic_root = np.array([0.0, -40.0, 20.0])
    aortic_root_radius = 15.0


def _vessel_length(vessel) -> float:
    return float(np.linalg.norm(np.diff(vessel.path, axis=0), axis=1).sum())


def test_left_dominance_gives_the_posterior_descending_artery_to_the_lcx(monkeypatch) -> None:
    patient = sample_patient(np.random.default_rng(1), 340.0, 120.0)
    lengths = {}
    for dominance in ("right", "left"):
        variation = _CourseVariation(dominance=dominance, short_reach=0.5)
        monkeypatch.setattr(
            _CourseVariation, "sample", classmethod(lambda cls, rng, v=variation: v)
        )
        rng, variety_rng = np.random.default_rng(2), np.random.default_rng(3)
        tree = coronary_tree(patient, _Mediastinum(), rng, variety_rng)
        assert tree.dominance == dominance
        lengths[dominance] = (_vessel_length(tree.lcx), _vessel_length(tree.rca))
    assert lengths["left"][0] > lengths["right"][0]  # the LCX runs on round the back
    assert lengths["left"][1] < lengths["right"][1]  # the RCA ends early


def test_devices_are_bright_metal_and_never_counted(monkeypatch) -> None:
    monkeypatch.setattr(devices, "STENT_RATE", 1.0)
    monkeypatch.setattr(devices, "LEAD_RATE", 1.0)
    case = generate_case(2001, 3, CaseOptions(matrix=256, variety=BROAD))
    assert case.patient["devices"] == ["stent", "pacemaker_lead"]
    device = case.labels == Label.DEVICE
    assert device.sum() > 50
    assert np.percentile(case.image[device], 90) > 800
    # Counting the devices as LAD calcium would raise the score: they are bright candidates
    # that the truth leaves out.
    relabelled = np.where(device, np.uint8(Label.CAC_LAD), case.labels)
    assert agatston(case.image, relabelled, case.spacing_zyx).total > case.truth.total + 10


def test_ostial_calcium_lies_at_an_ostium_and_does_not_count(monkeypatch) -> None:
    monkeypatch.setattr(calcium, "OSTIAL_RATE", 1.0)
    case = generate_case(5, 0, CaseOptions(**SMALL, variety=BROAD))
    aortic = [c for c in case.calcifications if c.label == Label.AORTIC_WALL_CALCIFICATION]
    assert aortic and case.truth.total == 0


@pytest.mark.parametrize("shape", [name for name, _ in LESION_SHAPES])
def test_every_lesion_shape_is_counted_calcium(monkeypatch, shape: str) -> None:
    monkeypatch.setattr(calcium, "LESION_SHAPES", ((shape, 1.0),))
    case = generate_case(300, 3, CaseOptions(**SMALL, variety=BROAD))
    lesions = [c for c in case.calcifications if calcium.is_lesion(c)]
    assert lesions and case.truth.category == 3
    lesion_voxels = np.isin(case.labels, LESIONS)
    assert lesion_voxels.any() and (case.image[lesion_voxels] >= 130).all()
    blobs = [len(c.blobs) for c in lesions]
    if shape == "ring":
        assert min(blobs) >= 4
    if shape in ("spotty", "elongated", "sliver"):
        assert set(blobs) == {1}
    if shape == "sliver":
        assert all(c.blobs[0].radii.min() == pytest.approx(0.3) for c in lesions)
    if shape == "elongated":
        assert all(c.blobs[0].radii[0] >= 2.5 * c.blobs[0].radii[1] for c in lesions)


def test_broad_lesion_densities_reach_down_to_the_threshold() -> None:
    densities = []
    for seed in range(20):
        case = generate_case(400 + seed, 2, CaseOptions(**SMALL, variety=BROAD))
        densities += [c.density_hu for c in case.calcifications if calcium.is_lesion(c)]
    assert min(densities) < 250  # version 2's lowest true density is 250 x the kVp factor


def test_heart_fat_is_generator_version_4_and_leaves_version_3_alone() -> None:
    from models.phantoms.variety import BROAD_WITH_FAT, variety_for

    assert (variety_for(2), variety_for(3), variety_for(4)) == (STANDARD, BROAD, BROAD_WITH_FAT)
    broad = generate_case(11, 3, CaseOptions(**SMALL, variety=BROAD))
    again = generate_case(11, 3, CaseOptions(**SMALL, variety=BROAD))
    fat = generate_case(11, 3, CaseOptions(**SMALL, variety=BROAD_WITH_FAT))
    assert np.array_equal(broad.image, again.image)
    assert fat.generator_version == "4" and "pericardial_fat_mm" not in broad.patient
    assert 1.5 <= fat.patient["epicardial_fat_mm"] <= 10.0


def test_sample_heart_fat_draws_pads_and_fat_thicker_than_version_3() -> None:
    from models.phantoms.variety import PERICARDIAL_FAT_MM, sample_heart_fat

    rng = np.random.default_rng(0)
    drawn = [sample_heart_fat(rng) for _ in range(400)]
    pads = np.array([d["pad_mm"] for d in drawn])
    with_pad = pads.max(axis=1) > 0
    assert 0.65 < with_pad.mean() < 0.85  # PERICARDIAL_FAT_RATE 0.75
    assert pads.max() <= PERICARDIAL_FAT_MM and pads[with_pad].max() > 20.0
    assert max(d["epicardial"] for d in drawn) > 8.0  # versions 2 and 3 stop at 5 mm


def test_the_pericardial_fat_pad_replaces_lung_next_to_the_heart_only(monkeypatch) -> None:
    from scipy import ndimage

    from models.phantoms import case as case_module
    from models.phantoms.variety import BROAD_WITH_FAT, sample_heart_fat

    def fat_of(pad_mm: float):
        def draw(rng):
            fat = sample_heart_fat(rng)
            return {**fat, "epicardial": 3.0, "groove": 4.0, "pad_mm": np.full(3, pad_mm),
                    "pad_shift_mm": np.zeros(2)}  # fmt: skip

        monkeypatch.setattr(case_module, "sample_heart_fat", draw)
        return generate_case(12, 0, CaseOptions(**SMALL, variety=BROAD_WITH_FAT))

    lean, fatty = fat_of(0.0), fat_of(20.0)
    lungs = (Label.LEFT_LUNG, Label.RIGHT_LUNG)
    heart = lean.labels == Label.HEART
    near = ndimage.binary_dilation(heart, iterations=3) & ~heart  # within ~3 voxels (7.5 mm)
    lung_near = lambda case: np.isin(case.labels[near], lungs).mean()  # noqa: E731
    assert lung_near(lean) > 0.1 and lung_near(fatty) < 0.5 * lung_near(lean)
    became_fat = np.isin(lean.labels, lungs) & (fatty.labels == Label.BACKGROUND)
    assert became_fat.sum() > 100
    # Fat HU where lung was (the reconstruction's noise and blur around it).
    assert -160 < np.median(fatty.image[became_fat]) < -40
    # Nothing but lung (its vessels, and granulomas, which are placed in what is lung) changed.
    changed = lean.labels != fatty.labels
    in_lung = {*lungs, Label.PULMONARY_VESSELS, Label.LUNG_GRANULOMA_CALCIFICATION}
    assert set(np.unique(lean.labels[changed])) <= in_lung


def test_version_4_sharp_kernels_are_noisier_up_to_120_hu() -> None:
    from models.phantoms.variety import MAX_NOISE_SD_HU, sharp_kernel_noise_sd

    rng = np.random.default_rng(0)
    drawn = np.array([sharp_kernel_noise_sd(rng, 30.0) for _ in range(300)])
    assert drawn.min() >= 30.0 and drawn.max() > 75.0  # 2-6 times the soft kernel's 15 HU
    assert sharp_kernel_noise_sd(np.random.default_rng(1), 40.0) <= MAX_NOISE_SD_HU
