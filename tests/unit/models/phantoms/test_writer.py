"""A written phantom case: truth.json equals the score recomputed from the written NIfTI, and the
DICOM series reads back with the NIfTI geometry and truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk

from models.agatston import agatston_from_images
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
