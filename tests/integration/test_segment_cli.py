"""`ctnode segment` on a generated phantom DICOM folder (and its NIfTI), both output kinds.

The organ model is the shipped base model when it is installed and finds a heart on a
phantom, else the random-weight stand-in of tests/organ_models.py (every voxel "heart"), named
with --model and found through the site configuration's [organs] models_dir, like an imported
model. The command runs as a subprocess with one torch thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from models.labels import Label
from node.volume import read_ct
from tests.organ_models import organ_model
from tests.tools import REPO, dciodvfy_errors


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    from models.phantoms.case import CaseOptions, generate_case
    from models.phantoms.writer import write_case

    folder = tmp_path_factory.mktemp("segment_case")
    write_case(generate_case(8, 2, CaseOptions(matrix=128, n_slices=40)), folder, dicom=True)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, list[str]]:
    """A site configuration naming the organ models folder; the --model arguments."""
    models_dir, model = organ_model(tmp_path_factory)
    config = tmp_path_factory.mktemp("segment_site") / "site.toml"
    config.write_text(f'[organs]\nmodels_dir = "{models_dir}"\ndevice = "cpu"\n')
    return config, (["--model", model] if model else [])


def segment(site, *args: str) -> subprocess.CompletedProcess:
    config, model = site
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "segment", *args, "--config", str(config), *model],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        check=False,
    )


def test_label_map_from_a_dicom_folder(case: Path, site, tmp_path: Path) -> None:
    out = tmp_path / "organs.nii.gz"
    proc = segment(site, str(case / "dicom"), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["kind"] == "labelmap" and report["output"] == str(out)
    labels = sitk.ReadImage(str(out))
    ct = read_ct(case / "dicom")
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    assert np.allclose(labels.GetSpacing(), ct.GetSpacing(), atol=1e-5)
    assert np.allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-6)
    array = sitk.GetArrayFromImage(labels)
    values = set(np.unique(array).tolist()) - {0}
    assert values and values <= {int(label) for label in Label}
    assert report["segments"] == len(values)
    # The printed volumes are the label map's: voxels x voxel volume.
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    heart_ml = float((array == Label.HEART).sum()) * voxel_ml
    assert heart_ml > 0
    assert report["volumes_ml"]["heart"] == pytest.approx(heart_ml, rel=0.01, abs=0.2)
    assert report["model"] and report["version"] and report["device"] == "cpu"


def test_seg_from_a_dicom_folder(case: Path, site, tmp_path: Path) -> None:
    out = tmp_path / "organs.dcm"
    proc = segment(site, str(case / "dicom"), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DICOM SEG with" in proc.stdout and "heart" in proc.stdout.lower()
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in (case / "dicom").glob("*")]
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert "Heart" in [item.SegmentLabel for item in ds.SegmentSequence]
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in ds.PerFrameFunctionalGroupsSequence
    }
    assert referenced <= {str(s.SOPInstanceUID) for s in sources}


def test_nifti_input_label_map_yes_seg_no(case: Path, site, tmp_path: Path) -> None:
    out = tmp_path / "from_nifti.nii.gz"
    proc = segment(site, str(case / "image.nii.gz"), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(case / "image.nii.gz")).GetSize()
    )
    refused = segment(site, str(case / "image.nii.gz"), "--out", str(tmp_path / "x.dcm"))
    assert refused.returncode == 1
    assert "needs a folder of the CT series" in " ".join(refused.stdout.split())
    assert not (tmp_path / "x.dcm").exists()
    wrong = segment(site, str(case / "dicom"), "--out", str(tmp_path / "x.png"))
    assert wrong.returncode == 1 and ".nii.gz" in wrong.stdout


def test_score_with_the_organ_heart_check(case: Path, tmp_path_factory, weights: Path) -> None:
    """`ctnode score --heart-check organs` adds the organ-based flag; the stand-in's heart
    fills the scan, so the scan cuts it. Only with the stand-in: the shipped model's verdict
    on this phantom is the model's business (its own tests)."""
    from tests.organ_models import STANDIN_NAME, write_standin

    models_dir = tmp_path_factory.mktemp("score_organ_models")
    write_standin(models_dir)
    environ = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CTNODE_ORGANS__MODELS_DIR": str(models_dir),
        "CTNODE_ORGANS__MODEL": STANDIN_NAME,
        "CTNODE_ORGANS__DEVICE": "cpu",
    }
    command = [sys.executable, "-m", "node.cli", "score", str(case / "dicom"), "--json"]
    command += ["--weights", str(weights)]
    runs = {}
    for check in ("registration", "organs"):
        proc = subprocess.run(
            [*command, "--heart-check", check],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env=environ,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[check] = json.loads(proc.stdout)
    assert "heart_not_in_field_of_view" not in runs["registration"]["flags"]
    assert runs["organs"]["flags"] == [*runs["registration"]["flags"], "heart_not_in_field_of_view"]
    assert runs["organs"]["agatston_total"] == runs["registration"]["agatston_total"]
