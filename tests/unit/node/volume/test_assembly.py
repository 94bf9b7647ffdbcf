"""Assembly of a stack into one HU volume: the planned grid, and memory near one volume."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from node.volume.assembly import assemble
from node.volume.geometry import plan_geometry
from node.volume.stacks import find_stacks
from tests.synthetic_dicom import hu_volume, write_series


def only_stack(folder: Path, **options):
    scan = find_stacks(folder, **options)
    assert len(scan.stacks) == 1, [s.label for s in scan.stacks]
    return scan.stacks[0]


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_a_thousand_slices_stay_near_one_volume_in_numpy(tmp_path: Path) -> None:
    volume = hu_volume(1000, rows=64, columns=64)
    write_series(tmp_path, volume, step=(0, 0, 0.5))
    stack = only_stack(tmp_path)
    tracemalloc.start()
    image = assemble(stack).image
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # numpy allocations are traced (SimpleITK's own copy, the second volume, is not)
    assert peak < 1.3 * volume.nbytes, f"peak {peak / volume.nbytes:.2f}x the volume"
    assert np.array_equal(array(image), volume)


def test_reader_geometry_plan_matches_assembly(tmp_path: Path) -> None:
    write_series(tmp_path, hu_volume(4))
    stack = only_stack(tmp_path)
    geometry = plan_geometry(stack)
    image = assemble(stack).image
    assert image.GetSize() == geometry.size and image.GetOrigin() == pytest.approx(geometry.origin)
