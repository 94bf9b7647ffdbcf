"""Grouping, exclusions, geometry and HU assembly on small synthetic series with known truth."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.volume.assembly import assemble
from node.volume.geometry import AssemblyError, plan_geometry
from node.volume.headers import PixelLayout, read_frame_headers
from node.volume.pixels import AIR_HU, to_hu
from node.volume.selection import kernel_class
from node.volume.stacks import find_stacks
from tests.synthetic_dicom import ct_slice, enhanced_ct, hu_volume, write_series


def only_stack(folder: Path, **options):
    scan = find_stacks(folder, **options)
    assert len(scan.stacks) == 1, [s.label for s in scan.stacks]
    return scan.stacks[0]


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


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


def test_padding_unsigned_and_out_of_field_become_air(tmp_path: Path) -> None:
    hu = hu_volume(3)
    hu[:, 0, 0] = -2000  # padding value
    hu[:, 1, 1] = -3024  # out of field, no padding attribute for it
    write_series(tmp_path / "signed", hu, padding=-2000)
    result = array(assemble(only_stack(tmp_path / "signed")).image)
    assert (result[:, 0, 0] == AIR_HU).all() and (result[:, 1, 1] == AIR_HU).all()
    unsigned = np.clip(hu_volume(3), -1024, 3071)
    write_series(tmp_path / "unsigned", unsigned, signed=False, intercept=-1024)
    assert np.array_equal(array(assemble(only_stack(tmp_path / "unsigned")).image), unsigned)


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


@pytest.mark.parametrize(
    ("dtype", "bits_stored", "signed", "slope", "intercept", "padding"),
    [
        (np.uint16, 12, False, 1.0, -1024.0, None),  # in place in int16
        (np.uint16, 16, False, 1.0, -32768.0, None),  # values above 32767: the int32 path
        (np.int16, 16, True, 1.0, -1024.0, None),  # could leave int16: the int32 path
        (np.int16, 16, True, 1.0, 0.0, -2000),  # in place, with padding
        (np.uint16, 12, False, 0.5, -1024.0, 0),  # non-unit slope, padding on stored value 0
    ],
)
def test_hounsfield_conversion_matches_the_formula(
    dtype, bits_stored: int, signed: bool, slope: float, intercept: float, padding
) -> None:
    info = np.iinfo(dtype)
    low = info.min if signed else 0
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    stored = np.random.default_rng(0).integers(low, high, (64, 64), endpoint=True).astype(dtype)
    stored[0, :4] = [low, high, padding or 0, 0]
    layout = PixelLayout("1.2.840.10008.1.2.1", 16, bits_stored, signed, 1, 0, padding, None)
    frame = SimpleNamespace(pixels=layout, slope=slope, intercept=intercept)
    expected = np.clip(np.rint(stored * slope + intercept), AIR_HU, np.iinfo(np.int16).max)
    if padding is not None:
        expected[stored == padding] = AIR_HU
    out = np.full((64, 64), 7, np.int16)
    assert to_hu(stored, frame, out=out) is out
    assert np.array_equal(out, expected.astype(np.int16))


def test_slope_and_intercept(tmp_path: Path) -> None:
    hu = (hu_volume(3) // 2) * 2
    write_series(tmp_path, hu, slope=2.0, intercept=-1000)
    assert np.array_equal(array(assemble(only_stack(tmp_path)).image), np.maximum(hu, AIR_HU))


def _compress_gdcm_jpeg_lossless(path: Path) -> None:
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


@pytest.mark.parametrize("syntax", ["jpeg-lossless", JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_compressed_transfer_syntaxes(tmp_path: Path, syntax: str) -> None:
    volume = hu_volume(3, rows=64, columns=64)  # OpenJPEG's default resolutions need >= 64 px
    for path in write_series(tmp_path, volume):
        if syntax == "jpeg-lossless":
            _compress_gdcm_jpeg_lossless(path)
            expected = "1.2.840.10008.1.2.4.70"
        else:
            ds = pydicom.dcmread(path)
            ds.compress(syntax, generate_instance_uid=False)
            ds.save_as(path)
            expected = syntax
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == expected
    stack = only_stack(tmp_path)
    assert all(f.pixels.native_offset is None for f in stack.frames)
    assert np.array_equal(array(assemble(stack).image), volume)


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
