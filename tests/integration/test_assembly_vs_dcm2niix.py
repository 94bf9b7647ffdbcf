"""Every CT series in ../shared/data/real, assembled by the node and by dcm2niix, compared.

Criteria: same shape, origin and spacing within 0.01 mm, direction within 1e-4, voxels
identical for untilted series, mean absolute difference under 1 HU for tilt-corrected ones.

Conventions bridged here, not differences: dcm2niix writes NIfTI (RAS, rows flipped, its own
slice order); SimpleITK reads it back in LPS, and the axes are then flipped/permuted onto the
node's [row, column, normal] axes by sitk.Flip/PermuteAxes, which keep every voxel's physical
position. HU below air are clipped to air on the dcm2niix side, as the node maps padding and
out-of-field values to air (GE's -1500 padding stays -1500 in dcm2niix's output).

One documented difference (series 301 of Philips S21610, tilt with the slice displacement
running towards negative column direction): dcm2niix anchors that case on the last slice,
moves the origin by a whole number of rows but shifts the pixels by the exact fraction, so its
pixels sit 1 - frac(displacement) rows (0.38 rows, 0.15 mm) from where the DICOM positions put
them, and its sform origin is 79.6 mm away from the first slice. The node's origin is checked
against the DICOM header instead, and dcm2niix's voxels are compared after undoing its
fractional shift.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from node.volume.assembly import assemble
from node.volume.pixels import AIR_HU
from node.volume.stacks import find_stacks
from tests.tools import require_real_data


@dataclass(frozen=True)
class Case:
    folder: tuple[str, ...]
    output: str  # dcm2niix file name (-f %s_%d), without .nii.gz
    tilted: bool = False
    dcm2niix_anchor_shift: bool = False  # the documented case above


CASES = {
    "lung_pet_ct_dx_A0001-soft": Case(("lung_pet_ct_dx_A0001", "series_soft_kernel"), "3_5mm"),
    "lung_pet_ct_dx_A0001-lung": Case(("lung_pet_ct_dx_A0001", "series_lung_kernel"), "2_5mm"),
    "totalseg-example_ct_dicom": Case(("totalseg_examples", "example_ct_dicom"), "0_CT_Body_3.0"),
    "dcm_qa_ct-Philips-S21570-201": Case(
        ("dcm_qa_ct", "In", "Philips", "S21570", "S2010"), "201_STD_BRAIN_5MM"
    ),
    "dcm_qa_ct-Philips-S21610-201-tilt": Case(
        ("dcm_qa_ct", "In", "Philips", "S21610", "S2010"), "201_STEREOTAXIS_Tilt_1", True
    ),
    "dcm_qa_ct-Philips-S21610-301-tilt": Case(
        ("dcm_qa_ct", "In", "Philips", "S21610", "S3010"), "301_STEREOTAXIS_Tilt_1", True, True
    ),
    "dcm_qa_ct-GE-2-tilt-variable-spacing": Case(("dcm_qa_ct", "In", "GE"), "2__Tilt_Eq_1", True),
}


def dcm2niix_binary() -> str:
    found = shutil.which("dcm2niix") or shutil.which(
        "dcm2niix", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("dcm2niix not installed (the test extra installs the PyPI wheel)")
    return found


def run_dcm2niix(folder: Path, out: Path, name: str) -> sitk.Image:
    out.mkdir()
    subprocess.run(
        [dcm2niix_binary(), "-z", "y", "-b", "n", "-f", "%s_%d", "-o", str(out), str(folder)],
        check=True,
        capture_output=True,
    )
    return sitk.ReadImage(str(out / f"{name}.nii.gz"))


def onto_axes_of(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """`image` with its axes flipped/permuted to match `reference`'s (voxels stay in place)."""
    ref = np.array(reference.GetDirection()).reshape(3, 3)
    own = np.array(image.GetDirection()).reshape(3, 3)
    mapping = ref.T @ own  # a signed permutation for grids that differ only in axis order
    target = [int(np.argmax(np.abs(mapping[:, j]))) for j in range(3)]
    flipped = sitk.Flip(image, [bool(mapping[target[j], j] < 0) for j in range(3)])
    return sitk.PermuteAxes(flipped, [target.index(i) for i in range(3)])


def shift_rows(volume: np.ndarray, rows: float) -> np.ndarray:
    """volume moved by `rows` (fractional) along axis 1, linear, edges repeated."""
    index = np.clip(np.arange(volume.shape[1]) - rows, 0, volume.shape[1] - 1)
    low = np.floor(index).astype(int)
    high = np.minimum(low + 1, volume.shape[1] - 1)
    weight = (index - low)[None, :, None]
    return (1 - weight) * volume[:, low] + weight * volume[:, high]


@pytest.mark.parametrize("name", list(CASES))
def test_series_matches_dcm2niix(name: str, tmp_path: Path, capsys) -> None:
    case = CASES[name]
    folder = require_real_data(*case.folder)
    scan = find_stacks(folder)
    assert len(scan.stacks) == 1, [s.label for s in scan.stacks]
    node = assemble(scan.stacks[0])
    reference = onto_axes_of(run_dcm2niix(folder, tmp_path / "out", case.output), node.image)

    assert node.image.GetSize() == reference.GetSize()
    spacing_diff = np.abs(np.subtract(node.image.GetSpacing(), reference.GetSpacing())).max()
    direction_diff = np.abs(np.subtract(node.image.GetDirection(), reference.GetDirection())).max()
    origin_diff = np.abs(np.subtract(node.image.GetOrigin(), reference.GetOrigin())).max()
    assert spacing_diff < 0.01 and direction_diff < 1e-4

    ours = sitk.GetArrayFromImage(node.image).astype(np.float64)
    theirs = np.maximum(np.rint(sitk.GetArrayFromImage(reference)), AIR_HU)
    if case.dcm2niix_anchor_shift:
        # our origin is the first slice's DICOM position (the grid starts at its row 0)
        assert node.image.GetOrigin() == pytest.approx(node.geometry.frames[0].position, abs=1e-3)
        displacement = float(np.abs(node.geometry.shifts).max())
        theirs = shift_rows(theirs, displacement - math.ceil(displacement))
    else:
        assert origin_diff < 0.01
    difference = np.abs(ours - theirs)
    mad = float(difference.mean())
    if case.tilted:
        assert mad < 1.0
    else:
        assert mad == 0.0
    with capsys.disabled():
        print(
            f"\n[dcm2niix] {name}: shape {node.image.GetSize()}, origin diff {origin_diff:.4f} mm, "
            f"spacing diff {spacing_diff:.5f} mm, direction diff {direction_diff:.1e}, "
            f"voxels MAD {mad:.3f} HU (max {difference.max():.0f}, "
            f"{(difference > 0).mean() * 100:.2f} % differ)"
        )
