"""Stack geometry: slice order, duplicates, holes, variable spacing and gantry tilt, on small
synthetic series with known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import (
    generate_uid,
)

from node.volume.assembly import assemble
from node.volume.geometry import AssemblyError
from tests.synthetic_dicom import hu_volume, write_series
from tests.unit.node.volume.test_assembly import array, only_stack


def test_sorted_by_position_not_instance_order(tmp_path: Path) -> None:
    volume = hu_volume(6)
    write_series(tmp_path, volume, order=[3, 0, 5, 1, 4, 2])
    image = assemble(only_stack(tmp_path)).image
    assert np.array_equal(array(image), volume)
    assert image.GetOrigin() == pytest.approx((-10.0, -20.0, 100.0))
    assert image.GetSpacing() == pytest.approx((0.5, 0.75, 2.5))  # (columns, rows, slices)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert image.GetMetaData("0018|0050") == "3"


def test_head_first_and_feet_first_give_the_same_volume(tmp_path: Path) -> None:
    volume = hu_volume(5)
    write_series(tmp_path / "hfs", volume, order=[4, 3, 2, 1, 0])  # acquired top down
    write_series(tmp_path / "ffs", volume, order=[0, 1, 2, 3, 4])
    head, feet = (assemble(only_stack(tmp_path / n)).image for n in ("hfs", "ffs"))
    assert np.array_equal(array(head), array(feet))
    assert head.GetOrigin() == feet.GetOrigin() and head.GetDirection() == feet.GetDirection()


def test_duplicate_position_keeps_one_with_a_note(tmp_path: Path) -> None:
    volume = hu_volume(4)
    uid = generate_uid()
    write_series(tmp_path, volume, series_uid=uid)
    write_series(tmp_path / "again", volume[:1] + 5, series_uid=uid)  # a resend of slice 0
    assembled = assemble(only_stack(tmp_path))
    assert assembled.image.GetSize()[2] == 4
    assert any("duplicate position" in note for note in assembled.notes)


def test_missing_slice_refused_or_resampled(tmp_path: Path) -> None:
    volume = hu_volume(8).astype(np.int16)
    write_series(tmp_path, volume, order=[0, 1, 2, 4, 5, 6, 7])  # slice 3 missing
    stack = only_stack(tmp_path)
    with pytest.raises(AssemblyError, match="missing slices"):
        assemble(stack, "refuse")
    assembled = assemble(stack, "resample")
    result = array(assembled.image)
    assert result.shape[0] == 8 and assembled.image.GetSpacing()[2] == pytest.approx(2.5)
    assert np.array_equal(result[[0, 1, 2, 4, 5, 6, 7]], volume[[0, 1, 2, 4, 5, 6, 7]])
    expected = np.rint((volume[2].astype(float) + volume[4]) / 2)
    assert np.abs(result[3] - expected).max() <= 1


def test_variable_spacing_resampled_to_uniform(tmp_path: Path) -> None:
    volume = np.stack([np.full((8, 8), 100 * k, np.int16) for k in range(6)])
    zs = [0.0, 2.0, 4.0, 6.0, 10.0, 14.0]  # 2 mm then 4 mm (a protocol change, no hole)
    uid = generate_uid()
    for k, z in enumerate(zs):
        write_series(tmp_path / str(k), volume[k : k + 1], origin=(0, 0, z), series_uid=uid)
    assembled = assemble(only_stack(tmp_path))
    z = assembled.geometry.output_distances
    assert np.allclose(np.diff(z), assembled.image.GetSpacing()[2])
    expected = np.interp(z, zs, 100 * np.arange(6))
    assert np.abs(array(assembled.image)[:, 4, 4] - expected).max() <= 0.5


def test_gantry_tilt_deshear_keeps_every_voxel_in_place(tmp_path: Path) -> None:
    tilt = np.radians(15)
    orientation = (1, 0, 0, 0, np.cos(tilt), -np.sin(tilt))
    volume = hu_volume(5, rows=40)
    write_series(tmp_path, volume, orientation=orientation, step=(0, 0, 3.0))
    assembled = assemble(only_stack(tmp_path))
    image = assembled.image
    assert "gantry tilt 15.0 deg" in assembled.notes[0]
    assert image.GetSize()[1] > 40  # rows added so that no data is cut off
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # orthogonal grid
    # every input slice's first pixel lands where the DICOM header says it is
    for k, frame in enumerate(assembled.geometry.frames):
        index = image.TransformPhysicalPointToContinuousIndex(frame.position)
        assert index[2] == pytest.approx(k) and index[0] == pytest.approx(0)
        row = round(index[1])
        if abs(index[1] - row) < 1e-6:
            assert array(image)[k, row, 0] == volume[k, 0, 0]
