"""The source CT series as the result objects need it: checked, and mapped onto the volume.

Every result object goes into the source study and refers back to the source instances, so
the instances must form one series of one study, and each must be exactly one slice of the CT
volume that was scored (node.volume.read_ct assembles it from the same files). Instances may come
in any order (as received); `slice_indices` says which volume slice each one holds, which is
what makes head-first and feet-first series, and any arrival order, come out right.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from node.character_sets import CharacterSetError, check_character_set, set_result_character_set

POSITION_TOLERANCE_VOXELS = 0.01  # DS strings and float32 geometry agree far better than this
ORIENTATION_TOLERANCE = 1e-4


# Patient and study attributes highdicom does not copy itself (it copies name, ID, birth date,
# sex, study UID/ID/date/time, accession number and referring physician): the rest of the
# Patient, General Study and Patient Study modules, so a result lands under the same patient
# and study however the PACS matches them.
PATIENT_AND_STUDY_KEYWORDS = (
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientBirthTime",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)


class SourceSeriesError(ValueError):
    """The instances are not one series of one study, or do not match the CT volume."""


def check_series(source: Sequence[Dataset]) -> list[Dataset]:
    """The instances as a list, after checking they are one series of one study."""
    instances = list(source)
    if not instances:
        raise SourceSeriesError("no source instances given")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword, "")) for ds in instances}
        if len(values) != 1 or "" in values:
            raise SourceSeriesError(f"source instances must share one {keyword}, got {values}")
    uids = [str(ds.SOPInstanceUID) for ds in instances]
    if len(set(uids)) != len(uids):
        raise SourceSeriesError("source instances repeat a SOP Instance UID")
    for ds in instances:
        try:
            check_character_set(ds)
        except CharacterSetError as error:
            raise SourceSeriesError(f"instance {ds.SOPInstanceUID}: {error}") from error
    return instances


def copy_patient_and_study(target: Dataset, source: Dataset) -> None:
    """Copy the patient and study attributes of `source` that `target` lacks (see
    PATIENT_AND_STUDY_KEYWORDS), then give `target` a Specific Character Set that encodes
    all of its text (node.character_sets: the source's where it can). The builders ask
    highdicom to write none, as its check rejects valid sets."""
    for keyword in PATIENT_AND_STUDY_KEYWORDS:
        if keyword in source and keyword not in target:
            target[keyword] = copy.deepcopy(source[keyword])
    set_result_character_set(target, source)


def slice_indices(source: Sequence[Dataset], ct: sitk.Image) -> list[int]:
    """For each instance (in the given order), the index of the volume slice it holds.

    Raises SourceSeriesError unless every instance lies exactly on a volume slice (same
    orientation, in-plane origin, matrix and pixel spacing) and the instances cover every
    slice once: results are drawn on the volume and written onto the instances' frames, so
    anything looser would misplace them.
    """
    instances = check_series(source)
    size = ct.GetSize()
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    spacing = ct.GetSpacing()
    indices = []
    for ds in instances:
        uid = ds.SOPInstanceUID
        if (int(ds.Columns), int(ds.Rows)) != (size[0], size[1]):
            raise SourceSeriesError(f"instance {uid}: matrix differs from the volume")
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if not (
            np.allclose(iop[:3], direction[:, 0], atol=ORIENTATION_TOLERANCE)
            and np.allclose(iop[3:], direction[:, 1], atol=ORIENTATION_TOLERANCE)
        ):
            raise SourceSeriesError(f"instance {uid}: orientation differs from the volume")
        row_mm, column_mm = (float(v) for v in ds.PixelSpacing)
        if not np.allclose((column_mm, row_mm), spacing[:2], rtol=1e-5):
            raise SourceSeriesError(f"instance {uid}: pixel spacing differs from the volume")
        position = [float(v) for v in ds.ImagePositionPatient]
        i, j, k = ct.TransformPhysicalPointToContinuousIndex(position)
        off_grid = max(abs(i), abs(j), abs(k - round(k)))
        if off_grid > POSITION_TOLERANCE_VOXELS or not 0 <= round(k) < size[2]:
            raise SourceSeriesError(f"instance {uid}: position is not a slice of the volume")
        indices.append(int(round(k)))
    if sorted(indices) != list(range(size[2])):
        raise SourceSeriesError(
            f"{len(instances)} instances do not cover the volume's {size[2]} slices once each"
        )
    return indices


def instance_for_slice(source: Sequence[Dataset], ct: sitk.Image, k: int) -> Dataset:
    """The source instance that holds volume slice `k`."""
    instances = list(source)
    return instances[slice_indices(instances, ct).index(k)]
