"""Grouping, exclusions, selection, read_ct and `ctnode inspect` on the real scans."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk
from typer.testing import CliRunner

from node.cli import app
from node.volume import plan_folder, read_ct
from tests.tools import require_real_data


def test_two_reconstructions_are_never_merged_and_the_soft_kernel_is_chosen() -> None:
    folder = require_real_data("lung_pet_ct_dx_A0001")
    plan = plan_folder(folder)
    kernels = {p.stack.first.kernel: p for p in plan.stacks}
    assert set(kernels) == {"L", "B"}
    assert all(len(p.stack.frames) == 64 for p in plan.stacks)
    assert plan.selection.chosen is kernels["B"].stack
    lung = kernels["L"].stack.label
    assert "sharp kernel" in plan.selection.reasons[lung]


def test_read_ct_returns_the_soft_kernel_volume_with_its_thickness() -> None:
    image = read_ct(require_real_data("lung_pet_ct_dx_A0001"))
    assert image.GetSize() == (512, 512, 64)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetMetaData("0018|0050") == "5"


def test_localizers_and_secondary_captures_are_excluded_with_reasons() -> None:
    plan = plan_folder(require_real_data("dcm_qa_ct", "In", "Philips"))
    reasons = {e.reason for e in plan.scan.excluded}
    assert any("localizer" in r for r in reasons)
    assert any("Secondary Capture" in r for r in reasons)
    assert any("DICOMDIR" in r for r in reasons)
    assert sorted(len(p.stack.frames) for p in plan.stacks) == [28, 54, 58]
    # head scans: every stack gets a reason, none is chosen for calcium
    assert plan.selection.chosen is None
    assert all("heart" in plan.selection.reasons[p.stack.label] for p in plan.stacks)


def test_inspect_prints_a_plan_and_exports_int16_nifti(tmp_path: Path) -> None:
    folder = require_real_data("lung_pet_ct_dx_A0001")
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(folder), "--json", "--export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen_for_calcium"] == "S3"
    assert len(report["exported"]) == 2
    for file in report["exported"].values():
        image = sitk.ReadImage(file)
        assert image.GetPixelID() == sitk.sitkInt16 and image.GetSize() == (512, 512, 64)
    # CliRunner's output is not a terminal: rich lays the tables out for 80 columns.
    table = runner.invoke(app, ["inspect", str(require_real_data("dcm_qa_ct"))])
    assert table.exit_code == 0, table.output
    assert "S301" in table.output and "localizer" in table.output
    # An 80-column terminal shows every value whole: the geometry table is cut nowhere.
    assert (
        "…" not in table.output and "512x612x58" in table.output and "STD+ (soft)" in table.output
    )
