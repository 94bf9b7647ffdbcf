"""Shared helpers for tests: real peers and the real data folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "real"


def require_tool(name: str, package: str) -> str:
    """Path of a command-line peer, or skip (only outside CI, where tests/run.sh installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt package {package}; tests/run.sh installs it)")
    return path


def require_real_data(*parts: str) -> Path:
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data folder {path} absent (present in CI beside the checkout)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy reports for one DICOM file (warnings are not errors)."""
    tool = require_tool("dciodvfy", "dicom3tools")
    proc = subprocess.run(
        [tool, str(path)], capture_output=True, text=True, errors="replace", check=False
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def dicom_truth_matches_nifti(folder: Path) -> float:
    """Read a phantom case's dicom/ series, check it has exactly the geometry and voxels of its
    image.nii.gz, and return the Agatston total of the DICOM image with the case's labels."""
    import numpy as np
    import SimpleITK as sitk

    from models.agatston import agatston_from_images

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder / "dicom")))
    series = reader.Execute()
    nifti = sitk.ReadImage(str(folder / "image.nii.gz"))
    assert series.GetSize() == nifti.GetSize()
    assert np.allclose(series.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
    assert np.allclose(series.GetSpacing(), nifti.GetSpacing(), atol=1e-6)
    assert np.allclose(series.GetDirection(), nifti.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(series), sitk.GetArrayViewFromImage(nifti))
    labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
    labels.CopyInformation(series)
    return agatston_from_images(series, labels).total


def calcium_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped calcium model (models/weights) when there is one; otherwise a tiny model
    trained for two steps on three phantoms (about a minute on CPU): the flow is the same,
    only the scores are meaningless. CTNODE_TEST_WEIGHTS names a folder to use instead (to
    reuse a tiny model between runs while developing)."""
    import os

    from models.calcium.inference import MANIFEST, WEIGHTS_DIR

    if os.environ.get("CTNODE_TEST_WEIGHTS"):
        return Path(os.environ["CTNODE_TEST_WEIGHTS"])
    if (WEIGHTS_DIR / MANIFEST).exists():
        return WEIGHTS_DIR
    from training.calcium import prepare, ship, train_registration, train_score

    work = tmp_path_factory.mktemp("tiny_calcium")
    data, reg, score = str(work / "data"), str(work / "reg"), str(work / "score")
    assert prepare.main(["--out", data, "--n", "3", "--seed", "5"]) == 0
    common = ["--data", data, "--iterations", "2", "--device", "cpu"]
    assert train_registration.main([*common, "--out", reg, "--batch", "2"]) == 0
    assert train_score.main([*common, "--out", score, "--batch", "1"]) == 0
    weights = work / "weights"
    ship_args = ["--registration", reg, "--score", score, "--weights", str(weights)]
    assert ship.main([*ship_args, "--data-note", "test"]) == 0
    return weights
