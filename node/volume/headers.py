"""DICOM files -> one header record per 2-D image (a single-frame instance or one frame).

Only the attributes that grouping, assembly and series selection need are kept, so a
1,000-slice series costs a few hundred kilobytes of headers, not its datasets. Pixel data
is not read here; for uncompressed files the byte offset of the pixel values is recorded so
that assembly can read each slice straight into its place in the volume.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID

from node.pixel_checks import native_length, native_length_fits

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_STORAGE = frozenset({CT_IMAGE, ENHANCED_CT_IMAGE, LEGACY_ENHANCED_CT_IMAGE})
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_BINARY_VRS = frozenset({"US", "SS", "UL", "SL", "OB", "OW", "SQ", "US or SS", "US or SS or OW"})
_INTEGER_CODES = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


@dataclass(frozen=True)
class PixelLayout:
    """How one frame's stored values are laid out in its file."""

    transfer_syntax: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples_per_pixel: int
    # byte offset of the first frame's values for native (uncompressed, little-endian)
    # pixel data; None where pydicom has to decode (compressed, big-endian, odd layouts)
    native_offset: int | None
    padding_value: int | None  # PixelPaddingValue (stored value), mapped to air
    padding_limit: int | None  # PixelPaddingRangeLimit: padding is the range between the two


@dataclass(frozen=True)
class FrameHeader:
    """One 2-D image and the attributes its stack, geometry and selection depend on."""

    path: Path
    frame: int | None  # 0-based frame index in a multi-frame file; None for single-frame
    sop_class: str
    sop_uid: str  # falls back to the file meta UID, then to a hash of the path
    study_uid: str
    series_uid: str  # "" when the file has none (grouping then uses a fallback key)
    frame_of_reference: str
    series_number: int | None
    series_description: str
    modality: str
    manufacturer: str
    image_type: tuple[str, ...]
    kernel: str
    acquisition_number: int | None
    instance_number: int | None
    content_time: str  # AcquisitionDateTime/ContentTime as text: a tie-breaker, not a clock
    position: tuple[float, float, float] | None  # ImagePositionPatient (LPS, mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row, column cosines)
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) in mm
    slice_thickness: float | None
    slope: float
    intercept: float
    pixels: PixelLayout | None  # None: the file holds no pixel data
    contrast_agent: str  # Contrast/Bolus Agent (0018,0010), "" when absent
    contrast_route: str  # Contrast/Bolus Route (0018,1040), "" when absent
    body_part: str
    patient_position: str
    gantry_tilt: float | None


@dataclass(frozen=True)
class Unreadable:
    """A file that yields no image, and why (reported, never silently dropped)."""

    path: Path
    reason: str


class PixelLengthError(ValueError):
    """Native pixel data whose length contradicts Rows, Columns, frames and bits; reading it
    would misplace every pixel. The message quotes sizes only."""


def scan_paths(root: Path) -> tuple[list[FrameHeader], list[Unreadable]]:
    """Header records of every image below `root` (a folder, searched recursively, or a file)."""
    return scan_files(_files(root))


def scan_files(paths: Iterable[Path]) -> tuple[list[FrameHeader], list[Unreadable]]:
    """Header records of every image in the given files."""
    frames: list[FrameHeader] = []
    skipped: list[Unreadable] = []
    for path in paths:
        try:
            frames.extend(read_frame_headers(path))
        except (InvalidDicomError, EOFError):
            skipped.append(Unreadable(path, "not a DICOM file"))
        except FileNotFoundError:
            skipped.append(Unreadable(path, "file missing"))
        except PixelLengthError as error:
            skipped.append(Unreadable(path, str(error)))
        except Exception as error:  # noqa: BLE001 - a corrupt file is reported, never fatal
            skipped.append(Unreadable(path, f"unreadable DICOM header ({type(error).__name__})"))
    return frames, skipped


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def read_frame_headers(path: Path) -> list[FrameHeader]:
    """One record per frame of one file ([] for a DICOM file without images, e.g. DICOMDIR)."""
    with open(path, "rb") as fp:
        # force=True: scanners and PACS exports still write files without the 128-byte
        # preamble; a file that is not DICOM at all fails on the first element instead.
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        if not _looks_like_dicom(ds):
            raise InvalidDicomError("no DICOM elements")
        pixel_offset, pixel_length = _native_pixel_offset(fp, ds)
    sop_class = _uid(ds, "SOPClassUID") or str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    rows, columns = int(_value(ds, "Rows") or 0), int(_value(ds, "Columns") or 0)
    if not rows or not columns:
        return [_record(path, None, ds, sop_class, None, _frame_geometry(ds), 0, 0)]
    layout = _pixel_layout(ds, pixel_offset)
    n_frames = _integer(_value(ds, "NumberOfFrames")) or 1
    if pixel_offset is not None:
        _check_native_length(pixel_length, rows, columns, n_frames, layout)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") if n_frames > 1 or shared else None
    if per_frame is None or n_frames == 1 and shared is None:
        geometry = _frame_geometry(ds)
        return [_record(path, None, ds, sop_class, layout, geometry, rows, columns)]
    records = []
    for index in range(n_frames):
        item = per_frame[index] if index < len(per_frame) else Dataset()
        geometry = _functional_geometry(ds, shared, item)
        records.append(_record(path, index, ds, sop_class, layout, geometry, rows, columns))
    return records


def _looks_like_dicom(ds: Dataset) -> bool:
    # force=True happily "reads" any file; a real DICOM file has file meta or some elements
    # from the patient/study/series/image modules.
    return bool(ds.get("file_meta") and ds.file_meta.get("TransferSyntaxUID")) or any(
        tag in ds for tag in (0x00080016, 0x00080060, 0x0020000D, 0x00280010)
    )


def _native_pixel_offset(fp, ds: Dataset) -> tuple[int | None, int]:
    """File offset of the Pixel Data values when they are stored natively (uncompressed), and
    how many bytes of them the file holds (the declared length, or less where the file ends
    first).

    stop_before_pixels leaves the file positioned at the Pixel Data element's tag; the
    element header is read here so the pixel pass can go straight to the values."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if ds.get("file_meta") else None
    syntax = UID(syntax) if syntax else UID("1.2.840.10008.1.2")
    if syntax.is_compressed or not syntax.is_little_endian or syntax.is_deflated:
        return None, 0
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return None, 0
    group, element = struct.unpack("<HH", head[:4])
    if (group << 16 | element) != PIXEL_DATA_TAG:
        return None, 0
    if syntax.is_implicit_VR:
        (length,) = struct.unpack("<I", head[4:8])
        value_start = start + 8
    else:
        (length,) = struct.unpack("<I", head[8:12])
        value_start = start + 12
    if length == UNDEFINED_LENGTH:
        return None, 0
    available = max(os.fstat(fp.fileno()).st_size - value_start, 0)
    return value_start, min(length, available)


def _check_native_length(
    length: int, rows: int, columns: int, frames: int, layout: PixelLayout
) -> None:
    """PixelLengthError unless the file holds exactly the native pixel data the header
    describes (node.pixel_checks, the rule the receiver applies; files can reach the spool
    another way, or be cut short on disk)."""
    expected = native_length(rows, columns, layout.samples_per_pixel, frames, layout.bits_allocated)
    if not native_length_fits(length, expected):
        raise PixelLengthError(
            f"pixel data {length} bytes, not {expected} for {rows}x{columns}"
            + (f"x{frames} frames" if frames != 1 else "")
            + f" at {layout.bits_allocated} bits"
        )


def _pixel_layout(ds: Dataset, native_offset: int | None) -> PixelLayout:
    syntax = ds.file_meta.get("TransferSyntaxUID") if ds.get("file_meta") else None
    padding = _value(ds, "PixelPaddingValue")
    limit = _value(ds, "PixelPaddingRangeLimit")
    bits_allocated = _integer(_value(ds, "BitsAllocated")) or 16
    return PixelLayout(
        transfer_syntax=str(syntax or "1.2.840.10008.1.2"),
        bits_allocated=bits_allocated,
        bits_stored=_integer(_value(ds, "BitsStored")) or bits_allocated,
        signed=_integer(_value(ds, "PixelRepresentation")) == 1,
        samples_per_pixel=_integer(_value(ds, "SamplesPerPixel")) or 1,
        native_offset=native_offset,
        padding_value=int(padding) if padding is not None else None,
        padding_limit=int(limit) if limit is not None else None,
    )


@dataclass(frozen=True)
class _Geometry:
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    slope: float
    intercept: float
    image_type: tuple[str, ...]
    kernel: str


@functools.cache
def _tag(keyword: str) -> BaseTag:
    return BaseTag(tag_for_keyword(keyword))  # type: ignore[arg-type]


def _value(ds: Dataset, keyword: str):
    """An element's value without pydicom's per-element conversion where it is still raw.

    Header scanning is the slowest part of assembly (pydicom's conversion of ~40 elements
    per file costs more than parsing the file); the text VRs used here (UI, CS, DS, IS, LO,
    SH, DA, TM, DT) are decoded directly, backslash-separated as stored, and single binary
    integers (US, SS, UL, SL) are unpacked in the dataset's byte order. Anything pydicom has
    already converted, and whatever else is raw (an ambiguous 'US or SS' in an implicit VR
    file, several values), goes through pydicom."""
    element = ds.get_item(_tag(keyword))
    if element is None:
        return None
    value = element.value
    if not isinstance(value, bytes):
        return value
    vr = element.VR
    if not vr or vr == "UN":  # implicit VR files carry none; UN: the sender did not know it
        vr = dictionary_VR(element.tag)
    if vr not in _BINARY_VRS:
        return value.decode("latin-1").strip(" \x00")
    code = _INTEGER_CODES.get(vr)
    if code is not None and len(value) == struct.calcsize(code):
        little_endian = ds.original_encoding[1] is not False
        return struct.unpack(("<" if little_endian else ">") + code, value)[0]
    return ds.get(keyword)  # let pydicom resolve the VR and apply the byte order


def _parts(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split("\\") if value else []
    if isinstance(value, bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _floats(value, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in _parts(value))
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(value) -> str:
    return "\\".join(str(v).strip() for v in _parts(value)).strip()


def _image_type(value) -> tuple[str, ...]:
    return tuple(str(v).strip().upper() for v in _parts(value))


def _frame_geometry(ds: Dataset) -> _Geometry:
    return _Geometry(
        position=_floats(_value(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(_value(ds, "ImageOrientationPatient"), 6),
        pixel_spacing=_floats(_value(ds, "PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_number(_value(ds, "SliceThickness")),
        slope=_number(_value(ds, "RescaleSlope")) or 1.0,
        intercept=_number(_value(ds, "RescaleIntercept")) or 0.0,
        image_type=_image_type(_value(ds, "ImageType")),
        kernel=_text(_value(ds, "ConvolutionKernel")),
    )


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def _functional(shared: Dataset | None, item: Dataset, keyword: str) -> Dataset | None:
    """A functional group macro: the per-frame item wins over the shared one (PS3.3 C.7.6.16)."""
    return _first_item(item, keyword) or _first_item(shared, keyword)


def _functional_geometry(ds: Dataset, shared: Dataset | None, item: Dataset) -> _Geometry:
    plane = _functional(shared, item, "PlanePositionSequence")
    orient = _functional(shared, item, "PlaneOrientationSequence")
    measures = _functional(shared, item, "PixelMeasuresSequence")
    rescale = _functional(shared, item, "PixelValueTransformationSequence")
    frame_type = _functional(shared, item, "CTImageFrameTypeSequence")
    recon = _functional(shared, item, "CTReconstructionSequence")
    return _Geometry(
        position=_floats(plane.get("ImagePositionPatient"), 3) if plane else None,  # type: ignore[arg-type]
        orientation=_floats(orient.get("ImageOrientationPatient"), 6) if orient else None,
        pixel_spacing=_floats(measures.get("PixelSpacing"), 2) if measures else None,  # type: ignore[arg-type]
        slice_thickness=_number(measures.get("SliceThickness")) if measures else None,
        slope=(_number(rescale.get("RescaleSlope")) if rescale else None) or 1.0,
        intercept=(_number(rescale.get("RescaleIntercept")) if rescale else None) or 0.0,
        image_type=_image_type(frame_type.get("FrameType") if frame_type else ds.get("ImageType")),
        kernel=_text(recon.get("ConvolutionKernel") if recon else ds.get("ConvolutionKernel")),
    )


def _uid(ds: Dataset, keyword: str) -> str:
    value = _value(ds, keyword)
    return str(value).strip() if value else ""


def _integer(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _record(
    path: Path,
    frame: int | None,
    ds: Dataset,
    sop_class: str,
    layout: PixelLayout | None,
    geometry: _Geometry,
    rows: int,
    columns: int,
) -> FrameHeader:
    sop_uid = _uid(ds, "SOPInstanceUID")
    if not sop_uid and ds.get("file_meta"):
        sop_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
    if not sop_uid:
        sop_uid = "path-" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    time = _text(_value(ds, "AcquisitionDateTime")) or _text(_value(ds, "ContentDate")) + _text(
        _value(ds, "ContentTime")
    )
    return FrameHeader(
        path=path,
        frame=frame,
        sop_class=sop_class,
        sop_uid=sop_uid,
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        frame_of_reference=_uid(ds, "FrameOfReferenceUID"),
        series_number=_integer(_value(ds, "SeriesNumber")),
        series_description=_text(_value(ds, "SeriesDescription")),
        modality=_text(_value(ds, "Modality")),
        manufacturer=_text(_value(ds, "Manufacturer")),
        image_type=geometry.image_type,
        kernel=geometry.kernel,
        acquisition_number=_integer(_value(ds, "AcquisitionNumber")),
        instance_number=_integer(_value(ds, "InstanceNumber")),
        content_time=time,
        position=geometry.position,  # type: ignore[arg-type]
        orientation=geometry.orientation,
        rows=rows,
        columns=columns,
        pixel_spacing=geometry.pixel_spacing,  # type: ignore[arg-type]
        slice_thickness=geometry.slice_thickness,
        slope=geometry.slope,
        intercept=geometry.intercept,
        pixels=layout,
        contrast_agent=_text(_value(ds, "ContrastBolusAgent")),
        contrast_route=_text(_value(ds, "ContrastBolusRoute")),
        body_part=_text(_value(ds, "BodyPartExamined")).upper(),
        patient_position=_text(_value(ds, "PatientPosition")).upper(),
        gantry_tilt=_number(_value(ds, "GantryDetectorTilt")),
    )
