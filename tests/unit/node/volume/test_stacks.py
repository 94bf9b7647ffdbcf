"""Stacks in a folder: grouping by series and what splits one, exclusions with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    generate_uid,
)

from node.volume.assembly import assemble
from node.volume.stacks import find_stacks
from tests.synthetic_dicom import hu_volume, write_series
from tests.unit.node.volume.test_assembly import array, only_stack


def test_two_kernels_in_one_series_are_two_stacks(tmp_path: Path) -> None:
    uid = generate_uid()
    write_series(tmp_path, hu_volume(4), series_uid=uid, kernel="B30f")
    write_series(tmp_path / "b", hu_volume(4, seed=1), series_uid=uid, kernel="B70f")
    scan = find_stacks(tmp_path)
    assert sorted(s.first.kernel for s in scan.stacks) == ["B30f", "B70f"]
    assert {s.label for s in scan.stacks} == {"S3.1", "S3.2"}


def test_image_type_splits_only_where_positions_repeat(tmp_path: Path) -> None:
    uid = generate_uid()
    # GE-like: thin ADD slices then thick AXIAL slices, one series, no overlap: one volume
    write_series(tmp_path / "a", hu_volume(3), series_uid=uid, image_type=("ORIGINAL", "ADD"))
    write_series(
        tmp_path / "b", hu_volume(3), series_uid=uid, origin=(-10, -20, 107.5), image_type=("X",)
    )
    assert len(find_stacks(tmp_path).stacks) == 1
    # same positions twice with different image types: two volumes
    other = tmp_path / "overlap"
    write_series(other, hu_volume(3), series_uid=uid, image_type=("ORIGINAL", "PRIMARY"))
    write_series(other / "d", hu_volume(3), series_uid=uid, image_type=("DERIVED", "SECONDARY"))
    scan = find_stacks(other)
    assert len(scan.stacks) == 2 and all("image type" in s.split_by for s in scan.stacks)


def test_empty_uids_fall_back_to_frame_of_reference(tmp_path: Path) -> None:
    volume = hu_volume(4)
    for path in write_series(tmp_path, volume):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ""
        ds.SOPInstanceUID = ""
        ds.StudyInstanceUID = ""
        ds.save_as(path)
    stack = only_stack(tmp_path)
    assert stack.series_uid == "" and all(f.sop_uid for f in stack.frames)
    assert np.array_equal(array(assemble(stack).image), volume)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "localizer"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.7"}, "Secondary Capture"),
        ({"manufacturer": "ctnode"}, "made by this node"),
        ({"image_type": ("DERIVED", "SECONDARY", "DOSE_INFO")}, "dose report"),
        ({"orientation": (0, 1, 0, 0, 0, -1)}, "sagittal reformat"),
    ],
)
def test_exclusions_carry_a_reason(tmp_path: Path, options: dict, reason: str) -> None:
    write_series(tmp_path, hu_volume(3), step=(2.5, 0, 0), **options)
    scan = find_stacks(tmp_path)
    assert not scan.stacks
    assert any(reason in e.reason for e in scan.excluded), scan.excluded


def test_reformats_are_assembled_when_allowed(tmp_path: Path) -> None:
    write_series(tmp_path, hu_volume(3), step=(2.5, 0, 0), orientation=(0, 1, 0, 0, 0, -1))
    stack = only_stack(tmp_path, allow_reformats=True)
    assert stack.plane == "sagittal"
    assert assemble(stack).image.GetSize() == (24, 32, 3)
