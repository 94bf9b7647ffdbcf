"""A minimal CT Image Storage writer (pydicom) for the second phantom style.

One file per slice, explicit VR little endian, unsigned 16-bit pixels with rescale intercept
-1024 and slope 1 (stored value = HU + 1024). Geometry from the case's grid, mirrored for the
patient position as scanners store feet-first and prone scans (grid.ORIENTATIONS). UIDs are
derived from the case seed and variant, so a rewrite gives the same series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from training.phantoms_alt import GENERATOR, VERSION
from training.phantoms_alt.case import AltCase
from training.phantoms_alt.grid import ORIENTATIONS, oriented

INTERCEPT = -1024
UID_PREFIX = "1.2.826.0.1.3680043.10.1425."  # any org root works for synthetic data


SERIES_NUMBERS = {"full": 2, "fov_crop": 3, "fov_resampled": 4, "contrast": 5,
                  "fov_crop_contrast": 6, "fov_resampled_contrast": 7}  # fmt: skip


def _uid(*parts) -> str:
    return generate_uid(UID_PREFIX, entropy_srcs=[GENERATOR, VERSION, *map(str, parts)])


def _ds(value: float) -> str:
    return f"{value:.6g}"


def write_series(case: AltCase, folder: Path, contrast_header: bool = False) -> list[Path]:
    """Write the case's image as a DICOM series into `folder`; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    acq, g, position = case.acquisition, case.grid, case.acquisition.position
    row, col = ORIENTATIONS[position]
    normal = np.cross(row, col)
    stored = oriented(case.image, position)
    # Position of the first stored voxel and the stored slice order (see grid.oriented).
    x0 = g.origin[0] + (g.shape[2] - 1) * g.spacing[2] if row[0] < 0 else g.origin[0]
    y0 = g.origin[1] + (g.shape[1] - 1) * g.spacing[1] if col[1] < 0 else g.origin[1]
    z_first = g.origin[2] + (g.shape[0] - 1) * g.spacing[0] if normal[2] < 0 else g.origin[2]
    study, series = _uid(case.seed, "study"), _uid(case.seed, case.variant, "series")
    frame = _uid(case.seed, case.variant, "frame")
    base = Dataset()
    base.PatientName = f"PHANTOM^ALT{case.seed}"
    base.PatientID = f"ALT{case.seed}"
    base.PatientBirthDate = ""
    base.PatientSex = "O"
    base.PatientPosition = position
    base.StudyInstanceUID = study
    base.StudyDate, base.StudyTime = "20260101", "120000"
    base.StudyID, base.AccessionNumber, base.ReferringPhysicianName = "1", "", ""
    base.SeriesInstanceUID = series
    base.SeriesNumber = SERIES_NUMBERS.get(case.variant, 9)
    base.SeriesDescription = f"{GENERATOR} {case.variant}"
    base.Modality = "CT"
    base.Manufacturer = "ctnode synthetic"
    base.ManufacturerModelName = f"{GENERATOR} {VERSION}"
    base.BodyPartExamined = "CHEST"
    base.FrameOfReferenceUID = frame
    base.PositionReferenceIndicator = ""
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.KVP = _ds(acq.kvp)
    base.SliceThickness = _ds(acq.thickness_mm)
    base.SpacingBetweenSlices = _ds(g.spacing[0])
    base.ConvolutionKernel = acq.kernel_name
    base.ReconstructionDiameter = _ds(g.shape[2] * g.spacing[2])
    base.AcquisitionNumber = 1
    base.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
    base.PixelSpacing = [_ds(g.spacing[1]), _ds(g.spacing[2])]
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = g.shape[1], g.shape[2]
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 12, 11
    base.PixelRepresentation = 0
    base.RescaleIntercept, base.RescaleSlope, base.RescaleType = str(INTERCEPT), "1", "HU"
    base.WindowCenter, base.WindowWidth = "40", "400"
    if contrast_header and case.variant.endswith("contrast"):
        base.ContrastBolusAgent = "IODINE"
        base.ContrastBolusRoute = "IV"
    files = []
    for k in range(g.shape[0]):
        ds = Dataset()
        ds.update(base)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid(case.seed, case.variant, "image", k)
        ds.InstanceNumber = k + 1
        z = z_first + k * g.spacing[0] * normal[2]
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.PixelData = (stored[k].astype(np.int32) - INTERCEPT).astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"slice_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
