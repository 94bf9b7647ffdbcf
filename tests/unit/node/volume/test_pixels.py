"""Stored values -> Hounsfield units: padding, signedness, slope and intercept, compressed
transfer syntaxes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from node.volume.assembly import assemble
from node.volume.headers import PixelLayout
from node.volume.pixels import AIR_HU, to_hu
from tests.synthetic_dicom import hu_volume, write_series
from tests.unit.node.volume.test_assembly import array, only_stack


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
