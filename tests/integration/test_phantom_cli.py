"""The issue's acceptance run: `python -m models.phantoms --out DIR --n 20 --seed 1 --dicom`.

Twenty full-size cases (512 x 512, 150-350 mm) with DICOM series; checks every case's truth
against the reference calculator on the written files, the five categories, dciodvfy on
sampled slices of every case, and the DICOM read-back for a few cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from models.agatston import agatston_from_images
from tests.tools import REPO, dciodvfy_errors, dicom_truth_matches_nifti, require_tool


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    cmd = [
        sys.executable,
        "-m",
        "models.phantoms",
        "--out",
        str(out),
        "--n",
        "20",
        "--seed",
        "1",
        "--dicom",
        "--workers",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 20
    return out


def cases(root: Path) -> list[Path]:
    return sorted(root.glob("case_*"))


def test_twenty_cases_cover_all_five_categories(phantom_set: Path) -> None:
    folders = cases(phantom_set)
    assert [f.name for f in folders] == [f"case_{i:04d}" for i in range(20)]
    categories = [json.loads((f / "truth.json").read_text())["category"] for f in folders]
    assert sorted(set(categories)) == [0, 1, 2, 3, 4]
    assert all(categories.count(c) == 4 for c in range(5)), "balanced by default"


def test_truth_is_reproduced_from_image_and_labels(phantom_set: Path) -> None:
    for folder in cases(phantom_set):
        truth = json.loads((folder / "truth.json").read_text())
        result = agatston_from_images(
            sitk.ReadImage(str(folder / "image.nii.gz")),
            sitk.ReadImage(str(folder / "labels.nii.gz")),
        )
        assert truth["agatston_total"] == result.total, folder.name
        assert truth["agatston_per_artery"] == result.per_artery, folder.name
        assert truth["volume_mm3"] == result.volume_mm3, folder.name
        assert (truth["category"], truth["cacdrs"]) == (result.category, result.cacdrs)
        assert len(truth["lesions"]) == len(result.lesions)
        for key in ("label_table", "acquisition", "lesions", "agatston_per_artery"):
            assert key in truth


def test_dicom_slices_pass_dciodvfy(phantom_set: Path) -> None:
    require_tool("dciodvfy", "dicom3tools")
    for folder in cases(phantom_set):
        files = sorted((folder / "dicom").glob("*.dcm"))
        assert len(files) == sitk.ReadImage(str(folder / "image.nii.gz")).GetSize()[2]
        for path in (files[0], files[len(files) // 2], files[-1]):
            assert dciodvfy_errors(path) == [], f"{folder.name}/{path.name}"


def test_dicom_series_reproduce_geometry_and_truth(phantom_set: Path) -> None:
    for folder in cases(phantom_set)[:4]:
        truth = json.loads((folder / "truth.json").read_text())
        assert dicom_truth_matches_nifti(folder) == truth["agatston_total"], folder.name
