"""README's main command, `ctnode demo`, as a user runs it (the console script): the node
and a stand-in PACS in one process, a phantom sent by C-STORE, SR + SEG + SC sent back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import SimpleITK as sitk

from models.agatston import agatston_from_images
from node.results.sr import read_calcium_sr
from tests.tools import REPO


def ctnode() -> str:
    script = Path(sys.executable).parent / "ctnode"
    return str(script) if script.exists() else shutil.which("ctnode")


def run_demo(out: Path, weights: Path, columns: int = 120) -> subprocess.CompletedProcess:
    """`ctnode demo` as a user runs it: the console script, seed 7, category 2."""
    env = {
        "CTNODE_DEMO__SEED": "7",
        "CTNODE_DEMO__CATEGORY": "2",
        "CTNODE_CALCIUM__WEIGHTS_DIR": str(weights),
        "PATH": "/usr/bin:/bin",
        "COLUMNS": str(columns),
    }
    return subprocess.run(
        [ctnode(), "demo", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_demo_runs_a_phantom_through_the_node(tmp_path: Path, weights: Path) -> None:
    proc = run_demo(tmp_path / "demo", weights)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    folder = tmp_path / "demo"
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["seed"] == 7 and truth["category"] == 2
    assert f"{truth['agatston_total']:.1f}" in proc.stdout
    # What came back from the node: the SR's score is printed beside the truth, the job log
    # with each stage, and the returned overlay as a PNG.
    report = read_calcium_sr(pydicom.dcmread(folder / "returned" / "sr.dcm"))
    assert f"{report.agatston_total:.1f}" in proc.stdout
    for text in ("job.stage.volume", "job.stage.score", "delivery.sent", "job.done"):
        assert text in proc.stdout
    assert pydicom.dcmread(folder / "returned" / "capture.dcm").BurnedInAnnotation == "YES"
    for png in ("preview.png", "overlay.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    files = sorted((folder / "dicom").glob("*.dcm"))
    assert len(files) == truth["geometry"]["shape_zyx"][0]
    recomputed = agatston_from_images(
        sitk.ReadImage(str(folder / "image.nii.gz")), sitk.ReadImage(str(folder / "labels.nii.gz"))
    )
    assert recomputed.total == truth["agatston_total"]


def test_demo_rejects_a_bad_setting_with_its_name(tmp_path: Path) -> None:
    env = {"CTNODE_DEMO__CATEGORY": "nine", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [ctnode(), "demo", "--out", str(tmp_path / "demo")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "CTNODE_DEMO__CATEGORY" in proc.stdout
    assert not (tmp_path / "demo").exists()


def test_demo_without_a_calcium_model_writes_the_phantom_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    proc = run_demo(tmp_path / "demo", tmp_path / "no-model", columns=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "No calcium model is installed" in proc.stdout
    truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert f"{truth['agatston_total']:.1f}" in proc.stdout
    assert (tmp_path / "demo" / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "demo" / "returned").exists()
