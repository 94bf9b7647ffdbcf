"""node.pixel_checks on datasets as pydicom parses them from the bytes a sender would send."""

from __future__ import annotations

import io
import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from node.pixel_checks import (
    MalformedPixelData,
    PixelDataMismatch,
    check_encapsulated,
    check_pixel_data,
    native_length,
)


def _image(rows=4, columns=4, bits=16, frames=None, pixel_data=None) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = bits
    if frames is not None:
        ds.NumberOfFrames = frames
    if pixel_data is not None:
        ds.PixelData = pixel_data
    return ds


def _wire(ds: Dataset, implicit: bool = False, cut: int = 0) -> Dataset:
    """The dataset as the receiver sees it: encoded, optionally cut short, parsed again."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    if "PixelData" in ds and ds["PixelData"].VR == "OB or OW":
        ds["PixelData"].VR = "OW"
    write_dataset(buffer, ds)
    raw = buffer.getvalue()
    return read_dataset(io.BytesIO(raw[: len(raw) - cut]), implicit, True)


def test_native_length_formula() -> None:
    assert native_length(512, 512, 1, 1, 16) == 524288
    assert native_length(3, 3, 1, 1, 8) == 9
    assert native_length(3, 3, 1, 1, 1) == 2  # nine bits packed into two bytes
    assert native_length(2, 2, 3, 5, 8) == 60


@pytest.mark.parametrize("implicit", [True, False])
def test_native_pixel_data_of_the_described_size_passes(implicit: bool) -> None:
    check_pixel_data(_wire(_image(pixel_data=bytes(32)), implicit), ExplicitVRLittleEndian)
    check_pixel_data(
        _wire(_image(frames=3, pixel_data=bytes(96)), implicit), ImplicitVRLittleEndian
    )


def test_odd_native_length_allows_one_padding_byte() -> None:
    padded = _image(rows=3, columns=3, bits=8, pixel_data=bytes(10))
    check_pixel_data(_wire(padded), ExplicitVRLittleEndian)


def test_more_pixels_than_rows_and_columns_say_is_refused() -> None:
    # the case: the header says 256 x 256, the values are 512 x 512
    ds = _wire(_image(rows=256, columns=256, pixel_data=bytes(512 * 512 * 2)))
    with pytest.raises(PixelDataMismatch, match="524288 bytes, not 131072 for 256x256 at 16"):
        check_pixel_data(ds, ExplicitVRLittleEndian)


def test_frames_are_counted() -> None:
    ds = _wire(_image(frames=2, pixel_data=bytes(32)))
    with pytest.raises(PixelDataMismatch, match="x2 frames"):
        check_pixel_data(ds, ExplicitVRLittleEndian)


@pytest.mark.parametrize("implicit", [True, False])
def test_pixel_data_cut_short_is_refused(implicit: bool) -> None:
    ds = _wire(_image(pixel_data=bytes(32)), implicit, cut=10)
    with pytest.raises(PixelDataMismatch, match="cut short"):
        check_pixel_data(ds, ExplicitVRLittleEndian)


def test_image_whose_pixel_data_element_is_gone_is_refused() -> None:
    ds = _wire(_image(pixel_data=bytes(32)), True, cut=36)  # the element's header cut too
    assert "PixelData" not in ds
    with pytest.raises(PixelDataMismatch, match="without pixel data"):
        check_pixel_data(ds, ExplicitVRLittleEndian)


def test_non_images_pass() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    check_pixel_data(ds, ExplicitVRLittleEndian)


def _encapsulated(fragments: list[bytes], frames: int = 1, **options) -> Dataset:
    ds = _image(frames=frames if frames != 1 else None)
    ds.PixelData = encapsulate(fragments, **options)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _wire(ds)


def test_well_formed_encapsulated_data_passes() -> None:
    check_pixel_data(_encapsulated([b"abcd"]), RLELossless)
    check_pixel_data(_encapsulated([b"ab", b"cdef"], frames=2), RLELossless)
    check_pixel_data(_encapsulated([b"ab", b"cdef"], frames=2, has_bot=False), RLELossless)


def test_fewer_fragments_than_frames_are_refused() -> None:
    with pytest.raises(PixelDataMismatch, match="1 pixel data fragments for 3 frame"):
        check_pixel_data(_encapsulated([b"abcd"], frames=3, has_bot=False), RLELossless)


def _item(payload: bytes, tag: int = 0xFFFEE000, length: int | None = None) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    size = len(payload) if length is None else length
    return struct.pack("<HHI", group, element, size) + payload


@pytest.mark.parametrize(
    ("value", "frames", "message"),
    [
        (_item(b"") + _item(b"ab", tag=0x7FE00010), 1, "tag \\(7FE0,0010\\) where an item"),
        (_item(b"") + _item(b"ab", length=100), 1, "runs past the element"),
        (_item(b"ab"), 1, "multiple of 4"),
        (b"", 1, "without a Basic Offset Table"),
        (_item(b"") + b"\xfe\xff", 1, "inside an item header"),
        (_item(struct.pack("<II", 0, 3)) + _item(b"abcd") + _item(b"ef"), 2, "between fragments"),
        (_item(struct.pack("<I", 0)) + _item(b"ab") + _item(b"cd"), 2, "1 entries, not 2"),
    ],
)
def test_malformed_encapsulation(value: bytes, frames: int, message: str) -> None:
    with pytest.raises((MalformedPixelData, PixelDataMismatch), match=message):
        check_encapsulated(value, frames)


def test_compressed_syntax_with_defined_length_is_refused() -> None:
    ds = _wire(_image(pixel_data=bytes(32)))
    with pytest.raises(MalformedPixelData, match="defined length"):
        check_pixel_data(ds, RLELossless)
