"""The second phantom style (training/phantoms_alt): reproducible, its truth is the Agatston
definition on its own written voxels, categories balanced, DICOM that reads back the same, a
cardiac field of view that keeps every lesion, and no code shared with models/phantoms.

Cases are made on a 128 matrix (large pixels, the same code paths) to keep this file fast.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.agatston import agatston, agatston_from_images
from models.labels import CAC_LABEL_TO_ARTERY
from node.volume import read_ct
from training.phantoms_alt.case import AltOptions, generate_case
from training.phantoms_alt.dicom import write_series
from training.phantoms_alt.grid import ORIENTATIONS, to_image
from training.phantoms_alt.output import plan, write_case
from training.phantoms_alt.variants import contrast_variant, fov_crop, fov_resampled

SMALL = AltOptions(matrix=128, max_slices=120)
PACKAGE = Path(__file__).resolve().parents[4] / "training" / "phantoms_alt"
CAC = list(CAC_LABEL_TO_ARTERY)


@pytest.fixture(scope="module")
def case():
    """A case with coronary calcium (category 3) and its contrast image."""
    return generate_case(plan(5, 7)[0][1], 3, replace(SMALL, contrast=True))


def test_the_same_seed_gives_the_same_case(case) -> None:
    again = generate_case(case.seed, 3, replace(SMALL, contrast=True))
    assert np.array_equal(again.image, case.image)
    assert np.array_equal(again.labels, case.labels)
    assert again.truth.total == case.truth.total
    other = generate_case(case.seed + 1, 3, SMALL)
    assert other.image.shape != case.image.shape or not np.array_equal(other.image, case.image)


def test_truth_is_the_agatston_score_of_the_written_image_and_labels(case, tmp_path) -> None:
    folder = write_case(case, tmp_path / "case")
    truth = json.loads((folder / "truth.json").read_text())
    image = sitk.ReadImage(str(folder / "image.nii.gz"))
    labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
    assert image.GetPixelID() == sitk.sitkInt16 and labels.GetPixelID() == sitk.sitkUInt8
    again = agatston_from_images(image, labels)
    # NIfTI keeps the spacing in float32: agreement to its precision.
    assert truth["agatston_total"] == pytest.approx(again.total, rel=1e-6)
    assert truth["agatston_per_artery"] == pytest.approx(again.per_artery, rel=1e-6)
    assert truth["volume_mm3"] == pytest.approx(again.volume_mm3, rel=1e-6)
    assert truth["category"] == 3 and truth["evaluation_only"] is True
    # Every labelled lesion voxel at or above 130 HU counts: the label is generous enough.
    hu, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    assert (np.isin(lab, CAC) & (hu >= 130)).sum() > 0
    assert truth["calcifications"] and all(c["vessel"] for c in truth["calcifications"])


def test_categories_are_balanced() -> None:
    jobs = plan(10, 11)
    assert sorted(c for _, _, c in jobs) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len({s for _, s, _ in jobs}) == 10
    made = {c: generate_case(s, c, SMALL).truth.category for _, s, c in jobs[:5]}
    assert made == {c: c for c in made}, made


def test_dicom_reads_back_with_the_same_hu_and_geometry(case, tmp_path) -> None:
    crop = fov_crop(case)  # small: a few seconds for all four patient positions
    for position in ORIENTATIONS:
        variant = replace(crop, acquisition=replace(crop.acquisition, position=position))
        folder = tmp_path / position
        write_series(variant, folder)
        read = read_ct(folder)
        expected = to_image(variant.image, variant.grid, position)
        assert read.GetSize() == expected.GetSize()
        np.testing.assert_allclose(read.GetSpacing(), expected.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(read.GetOrigin(), expected.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(read.GetDirection(), expected.GetDirection(), atol=1e-6)
        assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(expected))
        assert read.GetMetaData("0018|0050").strip() == f"{variant.acquisition.thickness_mm:.6g}"


def test_dicom_conforms_to_the_ct_image_iod(case, tmp_path) -> None:
    from tests.tools import dciodvfy_errors

    files = write_series(contrast_variant(fov_crop(case)), tmp_path / "ct", contrast_header=True)
    assert dciodvfy_errors(files[0]) == []
    assert dciodvfy_errors(files[-1]) == []


def test_cardiac_field_of_view_keeps_every_lesion_voxel(case) -> None:
    crop = fov_crop(case)
    assert np.count_nonzero(np.isin(crop.labels, CAC)) == np.count_nonzero(
        np.isin(case.labels, CAC)
    )
    assert crop.truth.total == pytest.approx(case.truth.total)
    width = crop.grid.shape[2] * crop.grid.spacing[2]
    assert abs(width - 220) <= 2 * crop.grid.spacing[2]
    assert crop.grid.shape[0] < case.grid.shape[0]
    # Its slices run from the carina to below the apex.
    z = crop.grid.origin[2] + crop.grid.spacing[0] * np.arange(crop.grid.shape[0])
    assert z[-1] >= case.patient.carina_z - crop.grid.spacing[0]
    assert z[0] <= case.patient.apex_z - 10 + crop.grid.spacing[0]
    resampled = fov_resampled(case, matrix=256)
    assert resampled.image.shape[1:] == (256, 256)
    again = agatston(resampled.image, resampled.labels, resampled.grid.spacing)
    assert resampled.truth.total == pytest.approx(again.total)
    assert resampled.truth.category >= 2  # the same calcium, resampled


def test_contrast_variant_raises_the_blood_pool_only(case) -> None:
    enhanced = contrast_variant(case)
    blood = case.labels == 1  # aorta
    assert 200 <= enhanced.contrast_blood_hu <= 450
    rise = np.median(enhanced.image[blood].astype(float) - case.image[blood])
    assert rise > 120
    fat = case.labels == 33  # subcutaneous fat: no iodine
    assert abs(np.median(enhanced.image[fat].astype(float) - case.image[fat])) < 2
    assert enhanced.truth_dict()["scorable"] is False


def test_phantoms_alt_shares_no_code_with_models_phantoms() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.startswith("models.phantoms") for n in names), (path.name, names)
    # ... nor at run time, through another module.
    code = (
        "import sys, training.phantoms_alt.__main__, training.phantoms_alt.variants;"
        "bad = [m for m in sys.modules if m.startswith('models.phantoms')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parents[1])
