"""Is an instance's Pixel Data what its Image Pixel module says? Checked before it is stored.

Native (uncompressed) pixel data must hold exactly Rows x Columns x Samples per Pixel x Number
of Frames x Bits Allocated / 8 bytes (PS3.5 8.1.1; Bits Allocated 1 packs eight pixels a byte),
plus one padding byte when that is odd (values have even length, PS3.5 7.1.1). Encapsulated
pixel data (PS3.5 A.4) must be a run of items, the first the Basic Offset Table, each lying
inside the element; pydicom drops an element whose sequence delimiter is missing, so an image
without pixel data counts as cut short. The Basic Offset Table, when filled, has one offset per
frame, each at the start of a fragment, and there are at least as many fragments as frames.

A slice that says 256 x 256 and carries 512 x 512 values would otherwise be read as a quarter of
an image; one cut short would fail only when its series is processed. The two exceptions say
which failure status fits (node.receive maps them); their messages quote no element values.
"""

from __future__ import annotations

import struct

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD


class PixelDataProblem(ValueError):
    """The pixel data does not fit the image's description."""


class PixelDataMismatch(PixelDataProblem):
    """Well-formed, but its size or frame count contradicts Rows, Columns, frames or bits."""


class MalformedPixelData(PixelDataProblem):
    """Encapsulated pixel data whose structure cannot be followed."""


def native_length(rows: int, columns: int, samples: int, frames: int, bits_allocated: int) -> int:
    """Bytes of native pixel data the Image Pixel module describes (no padding byte)."""
    bits = rows * columns * samples * frames * bits_allocated
    return (bits + 7) // 8


def native_length_fits(actual: int, expected: int) -> bool:
    """Whether `actual` bytes hold exactly `expected`, with the padding byte an odd length needs."""
    return actual == expected or (expected % 2 == 1 and actual == expected + 1)


def _integer(dataset: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer element's value; `default` when absent, None when not an integer.

    A US or IS value still raw is decoded here: pydicom's conversion costs more than the
    whole check, and the receiver runs it on every instance."""
    element = dataset.get_item(keyword)
    if element is None:
        return default
    value = element.value
    try:
        if isinstance(value, bytes):
            vr = element.VR or dictionary_VR(element.tag)
            if vr == "US" and len(value) == 2:
                little_endian = dataset.original_encoding[1] is not False
                return struct.unpack("<H" if little_endian else ">H", value)[0]
            if vr == "IS":
                text = value.decode("ascii").strip(" \x00")
                return int(text) if text else default
            value = dataset.get(keyword)  # anything else: pydicom's conversion
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def _describe(rows: int, columns: int, samples: int, frames: int, bits: int) -> str:
    shape = f"{rows}x{columns}"
    if samples != 1:
        shape += f"x{samples} samples"
    if frames != 1:
        shape += f"x{frames} frames"
    return f"{shape} at {bits} bits"


def check_pixel_data(dataset: Dataset, transfer_syntax_uid: str) -> None:
    """Raise PixelDataMismatch or MalformedPixelData when the pixel data does not fit the
    image (see the module docstring); datasets without an Image Pixel module pass."""
    keyword = next((k for k in PIXEL_KEYWORDS if k in dataset), None)
    describes_image = all(k in dataset for k in ("Rows", "Columns", "BitsAllocated"))
    if keyword is None:
        if describes_image:
            raise PixelDataMismatch("image without pixel data (missing or cut short)")
        return
    rows, columns = _integer(dataset, "Rows"), _integer(dataset, "Columns")
    bits = _integer(dataset, "BitsAllocated")
    samples = _integer(dataset, "SamplesPerPixel", 1)
    frames = _integer(dataset, "NumberOfFrames", 1)
    if not all(isinstance(v, int) and v > 0 for v in (rows, columns, bits, samples, frames)):
        raise PixelDataMismatch(
            "pixel data without valid Rows, Columns, Bits Allocated, Samples or Frames"
        )
    element = dataset.get_item(keyword)
    value = element.value if element.value is not None else b""
    declared = element.length if hasattr(element, "length") else len(value)
    if declared == UNDEFINED_LENGTH or getattr(element, "is_undefined_length", False):
        declared = UNDEFINED_LENGTH
    encapsulated = UID(transfer_syntax_uid).is_compressed and keyword == "PixelData"
    if encapsulated:
        if declared != UNDEFINED_LENGTH:
            raise MalformedPixelData("compressed pixel data with a defined length")
        check_encapsulated(bytes(value), frames)  # type: ignore[arg-type]
        return
    if declared == UNDEFINED_LENGTH:
        raise MalformedPixelData("uncompressed pixel data of undefined length")
    expected = native_length(rows, columns, samples, frames, bits)  # type: ignore[arg-type]
    if len(value) < declared:
        raise PixelDataMismatch(f"pixel data cut short ({len(value)} of {declared} bytes)")
    if not native_length_fits(len(value), expected):
        raise PixelDataMismatch(
            f"pixel data {len(value)} bytes, not {expected} for "
            + _describe(rows, columns, samples, frames, bits)  # type: ignore[arg-type]
        )


def check_encapsulated(value: bytes, frames: int) -> None:
    """Check encapsulated pixel data (the element's value as pydicom returns it: the items,
    with or without the sequence delimiter) against `frames`."""
    offsets = []  # start of each fragment item, counted from the end of the offset table
    position, first_fragment_at, table = 0, 0, None
    while position < len(value):
        if position + 8 > len(value):
            raise MalformedPixelData("encapsulated pixel data ends inside an item header")
        tag_group, tag_element, length = struct.unpack_from("<HHI", value, position)
        tag = tag_group << 16 | tag_element
        if tag == SEQUENCE_DELIMITER_TAG:
            break
        if tag != ITEM_TAG:
            raise MalformedPixelData(
                f"encapsulated pixel data has tag ({tag_group:04X},{tag_element:04X}) "
                "where an item belongs"
            )
        if length == UNDEFINED_LENGTH or position + 8 + length > len(value):
            raise MalformedPixelData("an encapsulated pixel data item runs past the element")
        if table is None:
            if length % 4:
                raise MalformedPixelData("Basic Offset Table length is not a multiple of 4")
            table = list(struct.unpack_from(f"<{length // 4}I", value, position + 8))
            first_fragment_at = position + 8 + length
        else:
            offsets.append(position - first_fragment_at)
        position += 8 + length
    if table is None:
        raise MalformedPixelData("encapsulated pixel data without a Basic Offset Table item")
    if len(offsets) < frames:
        raise PixelDataMismatch(f"{len(offsets)} pixel data fragments for {frames} frame(s)")
    if table:
        if len(table) != frames:
            raise PixelDataMismatch(f"Basic Offset Table has {len(table)} entries, not {frames}")
        fragment_starts = set(offsets)
        if table[0] != 0 or any(o not in fragment_starts for o in table):
            raise MalformedPixelData("Basic Offset Table points between fragments")
        if any(a >= b for a, b in zip(table, table[1:], strict=False)):
            raise MalformedPixelData("Basic Offset Table offsets do not increase")
