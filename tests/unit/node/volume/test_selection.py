"""Stack selection: kernel classes, and which stack the organs pipeline segments: the calcium
choice when there is one, otherwise any axial stack of at least 10 slices, contrast-enhanced or
short ones included (organ segmentation needs neither non-contrast blood nor the whole heart)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.volume import plan_folder, read_ct
from node.volume.selection import kernel_class, select_for_calcium, select_for_organs
from tests.synthetic_dicom import hu_volume, write_series


def _contrast(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ContrastBolusAgent = "IODINE"
        ds.save_as(path, enforce_file_format=True)


def test_a_contrast_enhanced_series_is_chosen_for_the_gate_and_segmented(tmp_path: Path) -> None:
    """The only stack is chosen (the scorer's contrast gate withholds its score, so the job
    ends with "not scorable: contrast-enhanced" rather than failing), and the reason says so;
    the volume carries the header evidence for the gate."""
    _contrast(write_series(tmp_path, hu_volume(48)))
    calcium = plan_folder(tmp_path).selection
    assert calcium.chosen is not None
    assert (
        "contrast-enhanced (header): the score will be withheld"
        in calcium.reasons[calcium.chosen.label]
    )
    assert read_ct(tmp_path).GetMetaData("0018|0010") == "IODINE"
    organs = plan_folder(tmp_path, select=select_for_organs).selection
    assert organs.chosen is not None and organs.chosen.label == calcium.chosen.label


def test_a_non_contrast_stack_is_preferred_to_a_contrast_one(tmp_path: Path) -> None:
    _contrast(write_series(tmp_path / "enhanced", hu_volume(48), kernel="B30f"))
    write_series(tmp_path / "plain", hu_volume(48, seed=1), kernel="B70f")
    calcium = plan_folder(tmp_path).selection
    assert calcium.chosen is not None and calcium.chosen.first.kernel == "B70f"
    assert any("contrast-enhanced (header)" in why for why in calcium.reasons.values())
    assert not read_ct(tmp_path / "plain").HasMetaDataKey("0018|0010")


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
