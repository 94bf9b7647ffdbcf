"""Writing a case folder: image.nii.gz, labels.nii.gz, truth.json and optionally dicom/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from models.labels import label_table
from models.phantoms.case import Case
from models.phantoms.dicom import SeriesMeta, write_ct_series


def case_uids(seed: int) -> dict[str, str]:
    """Study, series and frame-of-reference UIDs derived from the case seed (reproducible)."""
    return {
        kind: generate_uid(
            prefix=PYDICOM_ROOT_UID, entropy_srcs=["ctnode-phantom", str(seed), kind]
        )
        for kind in ("study", "series", "frame_of_reference")
    }


def series_meta(case: Case, name: str, rle: bool) -> SeriesMeta:
    acq = case.acquisition
    rng = np.random.default_rng([case.seed, 7])  # header details only, independent of pixels
    uids = case_uids(case.seed)
    birth_year = int(rng.integers(1940, 1990))
    return SeriesMeta(
        patient_name=f"PHANTOM^{name.upper()}",
        patient_id=f"PH{case.seed % 10**10:010d}",
        patient_birth_date=f"{birth_year}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
        patient_sex=str(rng.choice(["M", "F"])),
        study_instance_uid=uids["study"],
        series_instance_uid=uids["series"],
        frame_of_reference_uid=uids["frame_of_reference"],
        study_date=f"2026{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
        study_time=f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
        accession_number=f"A{case.seed % 10**9:09d}",
        study_description="CT CHEST",
        series_description=f"Chest {acq.slice_thickness_mm:g} {acq.kernel}",
        series_number=int(rng.integers(2, 9)),
        manufacturer=acq.manufacturer,
        manufacturer_model_name=acq.model,
        kvp=acq.kvp,
        tube_current_ma=round(acq.tube_current_ma, 1),
        exposure_time_ms=float(rng.choice([330.0, 500.0, 750.0, 1000.0])),
        convolution_kernel=acq.kernel,
        slice_thickness_mm=acq.slice_thickness_mm,
        patient_position=acq.patient_position,
        pixel_representation=acq.pixel_representation,
        rle_lossless=rle,
    )


def truth_document(case: Case, name: str) -> dict:
    grid = case.grid
    image = grid.to_image(np.zeros((1, 1, 1), dtype=np.uint8))
    truth = case.truth.to_dict()
    for lesion in truth["lesions"]:
        k, j, i = lesion["centroid_zyx"]
        lesion["centroid_mm"] = [
            round(v, 2) for v in image.TransformContinuousIndexToPhysicalPoint((i, j, k))
        ]
    return {
        "case": name,
        "generator_version": case.generator_version,
        "seed": case.seed,
        "target_category": case.target_category,
        "lesion_attempts": case.attempts,
        **truth,
        "acquisition": case.acquisition.to_dict(),
        "geometry": {
            "shape_zyx": list(grid.shape),
            "spacing_xyz": list(grid.spacing),
            "origin": list(grid.origin),
            "direction": list(grid.direction),
        },
        "patient": case.patient,
        "calcifications_rendered": [c.to_dict() for c in case.calcifications],
        "label_table": {str(k): v for k, v in label_table().items()},
    }


def write_case(case: Case, folder: Path, *, dicom: bool = False, rle: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.name
    grid = case.grid
    sitk.WriteImage(grid.to_image(case.image), str(folder / "image.nii.gz"), True, 1)
    sitk.WriteImage(grid.to_image(case.labels), str(folder / "labels.nii.gz"), True, 1)
    (folder / "truth.json").write_text(json.dumps(truth_document(case, name), indent=1) + "\n")
    if dicom:
        write_ct_series(grid.to_image(case.image), series_meta(case, name, rle), folder / "dicom")
    return folder
