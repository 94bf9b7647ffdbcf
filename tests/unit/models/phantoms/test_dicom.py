"""Round trips and conformance of the synthetic CT series writer (models/phantoms/dicom.py)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from models.phantoms.dicom import SeriesMeta, write_ct_series

SHAPE = (7, 48, 64)  # numpy order: slices, rows, columns
SPACING = (0.7, 0.8, 1.5)
ORIGIN = (-120.35, 31.2, -402.75)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # row cosine -x, slices towards -z
POSITIONS = {"HFS": IDENTITY, "FFS": FLIPPED}

META = SeriesMeta(
    patient_name="PHANTOM^CASE0001",
    patient_id="PH0001",
    patient_birth_date="19610714",
    patient_sex="F",
    study_instance_uid="1.2.826.0.1.3680043.8.498.1001",
    series_instance_uid="1.2.826.0.1.3680043.8.498.1002",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1003",
    study_date="20240131",
    study_time="093012",
    accession_number="ACC000001",
    study_description="CT CHEST",
    series_description="Chest 3.0 B30f",
    series_number=3,
    manufacturer="SIEMENS",
    manufacturer_model_name="SOMATOM Definition AS",
    kvp=120.0,
    tube_current_ma=180.0,
    exposure_time_ms=500.0,
    convolution_kernel="B30f",
    slice_thickness_mm=3.0,
    patient_position="HFS",
    pixel_representation=0,
)

CASES = [
    pytest.param(position, pr, rle, id=f"{position}-pr{pr}-{'rle' if rle else 'evrle'}")
    for position in ("HFS", "FFS")
    for pr in (0, 1)
    for rle in (False, True)
]


def make_image(direction: tuple[float, ...], values: np.ndarray | None = None) -> sitk.Image:
    if values is None:
        # Every slice distinct and varied, covering -1024..2000 (3025 values, 21504 voxels).
        values = (np.arange(np.prod(SHAPE)) * 7919 % 3025 - 1024).reshape(SHAPE)
        values[0, 0, 0], values[-1, -1, -1] = -1024, 2000
    image = sitk.GetImageFromArray(values.astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction)
    return image


def write_case(
    tmp_path: Path, position: str, pr: int, rle: bool, name: str = "series"
) -> tuple[sitk.Image, list[Path]]:
    image = make_image(POSITIONS[position])
    meta = dataclasses.replace(
        META, patient_position=position, pixel_representation=pr, rle_lossless=rle
    )
    return image, write_ct_series(image, meta, tmp_path / name)


@pytest.mark.parametrize("position, pr, rle", CASES)
def test_sitk_series_reader_round_trip(tmp_path: Path, position: str, pr: int, rle: bool) -> None:
    image, paths = write_case(tmp_path, position, pr, rle)
    assert [p.name for p in paths] == [f"IM{i:06d}.dcm" for i in range(1, SHAPE[0] + 1)]

    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series"))
    assert len(names) == SHAPE[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    back = reader.Execute()

    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(back).astype(np.int32),
        sitk.GetArrayFromImage(image).astype(np.int32),
    )


@pytest.mark.parametrize("position, pr, rle", CASES)
def test_pydicom_pixels_geometry_and_instance_order(
    tmp_path: Path, position: str, pr: int, rle: bool
) -> None:
    image, paths = write_case(tmp_path, position, pr, rle)
    hu = sitk.GetArrayFromImage(image)
    ipp_to_slice = {
        tuple(np.round(image.TransformIndexToPhysicalPoint((0, 0, k)), 3)): k
        for k in range(SHAPE[0])
    }
    z_by_instance = []
    for instance_number, path in enumerate(paths, start=1):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == (
            pydicom.uid.RLELossless if rle else pydicom.uid.ExplicitVRLittleEndian
        )
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.InstanceNumber == instance_number
        assert ds.PixelRepresentation == pr
        assert ds.BitsStored == (16 if pr else 12)
        assert float(ds.RescaleIntercept) == (0.0 if pr else -1024.0)
        assert ds.PatientPosition == position
        k = ipp_to_slice[tuple(np.round([float(v) for v in ds.ImagePositionPatient], 3))]
        assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
        d = image.GetDirection()
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], [d[0], d[3], d[6], d[1], d[4], d[7]]
        )
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [SPACING[1], SPACING[0]])
        assert float(ds.SpacingBetweenSlices) == pytest.approx(SPACING[2])
        assert float(ds.SliceThickness) == pytest.approx(META.slice_thickness_mm)
        assert float(ds.ReconstructionDiameter) == pytest.approx(SHAPE[2] * SPACING[0])
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(values, hu[k])
        z_by_instance.append(float(ds.ImagePositionPatient[2]))

    # HFS scans head to feet (instance 1 = highest z); FFS feet to head.
    expected = sorted(z_by_instance, reverse=position == "HFS")
    assert z_by_instance == expected
    assert len(set(z_by_instance)) == SHAPE[0]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
@pytest.mark.parametrize("position, pr, rle", CASES)
def test_dciodvfy_reports_no_errors(tmp_path: Path, position: str, pr: int, rle: bool) -> None:
    _, paths = write_case(tmp_path, position, pr, rle)
    for path in paths:
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [
            line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")
        ]
        assert not errors, f"{path.name}: {errors}"
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"


def test_deterministic_uids_and_bytes(tmp_path: Path) -> None:
    _, first = write_case(tmp_path, "HFS", 0, True, name="a")
    _, second = write_case(tmp_path, "HFS", 0, True, name="b")
    uids_a = [pydicom.dcmread(p).SOPInstanceUID for p in first]
    uids_b = [pydicom.dcmread(p).SOPInstanceUID for p in second]
    assert uids_a == uids_b
    assert len(set(uids_a)) == len(uids_a)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))


def test_uid_root_prefixes_instance_uids(tmp_path: Path) -> None:
    paths = write_ct_series(make_image(IDENTITY), META, tmp_path, uid_root="1.2.3.4.")
    for path in paths:
        uid = pydicom.dcmread(path).SOPInstanceUID
        assert uid.startswith("1.2.3.4.") and uid.is_valid


def test_unsigned_clips_to_12_bits(tmp_path: Path) -> None:
    values = np.full(SHAPE, 40, dtype=np.int16)
    values[:, 0, 0], values[:, 0, 1] = -2048, 4000
    paths = write_ct_series(make_image(IDENTITY, values), META, tmp_path)
    ds = pydicom.dcmread(paths[0])
    hu = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
    assert hu[0, 0] == -1024 and hu[0, 1] == 3071 and hu[1, 1] == 40


def test_signed_rejects_values_outside_int16(tmp_path: Path) -> None:
    image = sitk.Cast(make_image(IDENTITY), sitk.sitkInt32)
    image[0, 0, 0] = 40000
    meta = dataclasses.replace(META, pixel_representation=1)
    with pytest.raises(ValueError, match="signed 16 bits"):
        write_ct_series(image, meta, tmp_path)
