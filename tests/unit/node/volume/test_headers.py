"""Header records: binary values in every encoding, the frames of an Enhanced CT file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from node.volume.assembly import assemble
from node.volume.headers import read_frame_headers
from tests.synthetic_dicom import ct_slice, enhanced_ct, hu_volume
from tests.unit.node.volume.test_assembly import array, only_stack


@pytest.mark.parametrize(
    ("syntax", "implicit_vr", "little_endian"),
    [
        (ImplicitVRLittleEndian, True, True),  # no VR in the file: 'US or SS' from the dictionary
        (ExplicitVRBigEndian, False, False),
        (ExplicitVRLittleEndian, False, True),  # with PixelPaddingValue stored as UN
    ],
)
def test_binary_header_values_in_other_encodings(
    tmp_path: Path, syntax: str, implicit_vr: bool, little_endian: bool
) -> None:
    """The header scan unpacks US/SS values itself; byte order and implicit VR must hold."""
    hu = hu_volume(1, rows=20, columns=30)
    ds = ct_slice(hu[0], (0.0, 0.0, 0.0), series_uid=generate_uid(), instance=7, padding=-2000)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(tmp_path / "one", implicit_vr=implicit_vr, little_endian=little_endian)
    if not implicit_vr and little_endian:  # PixelPaddingValue as UN, as a PACS may forward it
        data = (tmp_path / "one").read_bytes()
        as_ss = struct.pack("<HH2sH", 0x0028, 0x0120, b"SS", 2)
        as_un = struct.pack("<HH2sHI", 0x0028, 0x0120, b"UN", 0, 2)
        assert data.count(as_ss) == 1
        (tmp_path / "one").write_bytes(data.replace(as_ss, as_un))
    (frame,) = read_frame_headers(tmp_path / "one")
    assert (frame.rows, frame.columns, frame.instance_number) == (20, 30, 7)
    layout = frame.pixels
    assert (layout.bits_allocated, layout.bits_stored, layout.signed) == (16, 16, True)
    assert (layout.samples_per_pixel, layout.padding_value) == (1, -2000)


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    volume = hu_volume(5)
    order = [2, 0, 4, 1, 3]  # frames stored out of spatial order
    ds = enhanced_ct(volume[order], origin=(0, 0, 0), step=(0, 0, 1.25))
    # positions follow the stored frames: rewrite them for the permuted order
    for item, k in zip(ds.PerFrameFunctionalGroupsSequence, order, strict=True):
        item.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 1.25 * k]
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    stack = only_stack(tmp_path)
    assert len(stack.frames) == 5 and stack.first.kernel == "B30f"
    image = assemble(stack).image
    assert np.array_equal(array(image), volume)
    assert image.GetSpacing()[2] == pytest.approx(1.25)
