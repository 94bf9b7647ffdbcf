"""Stack selection: kernel classes, and which stack the organs pipeline segments: the calcium
choice when there is one, otherwise any axial stack of at least 10 slices, contrast-enhanced or
short ones included (organ segmentation needs neither non-contrast blood nor the whole heart)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.volume import plan_folder
from node.volume.selection import kernel_class, select_for_calcium, select_for_organs
from tests.synthetic_dicom import hu_volume, write_series


def _contrast(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ContrastBolusAgent = "IODINE"
        ds.save_as(path, enforce_file_format=True)


def test_a_contrast_enhanced_series_is_segmented_but_not_scored(tmp_path: Path) -> None:
    _contrast(write_series(tmp_path, hu_volume(48)))
    calcium = plan_folder(tmp_path).selection
    assert calcium.chosen is None
    assert "contrast" in " ".join(calcium.reasons.values())
    organs = plan_folder(tmp_path, select=select_for_organs).selection
    assert organs.chosen is not None
    assert "chosen for organs" in organs.reasons[organs.chosen.label]


def test_organs_take_the_calcium_choice_when_there_is_one(tmp_path: Path) -> None:
    write_series(tmp_path / "soft", hu_volume(48), kernel="B30f")
    write_series(tmp_path / "sharp", hu_volume(48, seed=1), kernel="B70f")
    calcium = plan_folder(tmp_path, select=select_for_calcium).selection
    organs = plan_folder(tmp_path, select=select_for_organs).selection
    assert calcium.chosen is not None and organs.chosen is not None
    assert organs.chosen.label == calcium.chosen.label
    assert calcium.chosen.first.kernel == "B30f"


def test_short_stacks_organs_yes_below_ten_slices_no(tmp_path: Path) -> None:
    write_series(tmp_path / "short", hu_volume(12))  # 30 mm: too little heart for calcium
    assert plan_folder(tmp_path).selection.chosen is None
    assert plan_folder(tmp_path, select=select_for_organs).selection.chosen is not None
    write_series(tmp_path / "tiny", hu_volume(6))
    organs = plan_folder(tmp_path / "tiny", select=select_for_organs).selection
    assert organs.chosen is None and "only 6 slices" in " ".join(organs.reasons.values())


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("B30f", "soft"),
        ("Br38f\\3", "soft"),
        ("B70f", "sharp"),
        ("Br64", "sharp"),
        ("STANDARD", "soft"),
        ("LUNG", "sharp"),
        ("BONEPLUS", "sharp"),
        ("B", "soft"),
        ("L", "sharp"),
        ("YA", "sharp"),
        ("FC03", "soft"),
        ("FC52", "sharp"),
        ("", "unknown"),
    ],
)
def test_kernel_classes(kernel: str, expected: str) -> None:
    assert kernel_class(kernel) == expected
