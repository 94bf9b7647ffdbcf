"""Small synthetic CT series for assembly tests: every trait set explicitly, nothing real."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def hu_volume(n_slices: int, rows: int = 32, columns: int = 24, seed: int = 0) -> np.ndarray:
    """int16 HU test pattern (slices, rows, columns): distinct values in every voxel."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1500, size=(n_slices, rows, columns)).astype(np.int16)


def ct_slice(
    hu: np.ndarray,
    position: Sequence[float],
    *,
    series_uid: str,
    instance: int,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.75, 0.5),
    kernel: str = "B30f",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    signed: bool = True,
    intercept: float = 0.0,
    slope: float = 1.0,
    padding: int | None = None,
    manufacturer: str = "SIEMENS",
    sop_class: str = CTImageStorage,
    thickness: float = 3.0,
) -> Dataset:
    """One CT Image Storage dataset; `hu` is stored as (hu - intercept) / slope."""
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = "CT"
    ds.Manufacturer = manufacturer
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance
    ds.ImageType = list(image_type)
    ds.ConvolutionKernel = kernel
    ds.BodyPartExamined = "CHEST"
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    if padding is not None:
        ds.PixelPaddingValue = padding
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    origin: Sequence[float] = (-10.0, -20.0, 100.0),
    step: Sequence[float] = (0.0, 0.0, 2.5),
    series_uid: str | None = None,
    order: Sequence[int] | None = None,
    **slice_options,
) -> list[Path]:
    """Write volume[k] at origin + k * step, files in `order` (default: as given)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    paths = []
    for k in order if order is not None else range(len(volume)):
        position = np.asarray(origin, float) + k * np.asarray(step, float)
        ds = ct_slice(volume[k], position, series_uid=uid, instance=k + 1, **slice_options)
        path = folder / f"{uid[-8:]}_{k:04d}"  # no extension, as many scanners write
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def enhanced_ct(
    volume: np.ndarray, origin: Sequence[float], step: Sequence[float], kernel: str = "B30f"
) -> Dataset:
    """A multi-frame Enhanced CT Image dataset holding `volume` (signed HU, one frame/slice)."""
    template = ct_slice(volume[0], origin, series_uid=generate_uid(), instance=1, kernel=kernel)
    ds = copy.deepcopy(template)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, keyword)
    for keyword in ("SliceThickness", "RescaleIntercept", "RescaleSlope", "ConvolutionKernel"):
        delattr(ds, keyword)
    ds.SOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.NumberOfFrames = len(volume)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [0.75, 0.5]
    measures.SliceThickness = 3.0
    shared.PixelMeasuresSequence = DicomSequence([measures])
    rescale = Dataset()
    rescale.RescaleIntercept = "0"
    rescale.RescaleSlope = "1"
    rescale.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    recon = Dataset()
    recon.ConvolutionKernel = kernel
    shared.CTReconstructionSequence = DicomSequence([recon])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in range(len(volume)):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in np.add(origin, np.multiply(k, step))]
        item.PlanePositionSequence = DicomSequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = volume.astype(np.int16).tobytes()
    return ds
