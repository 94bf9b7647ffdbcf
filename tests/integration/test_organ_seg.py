"""The organ SEG (node.results.organ_seg) built from a phantom's true label map, written and checked.

The phantom's label map stands in for a segmentation: every check below then has an exact
answer (which organs are present, which voxels each segment holds on which source frame). The
series is written feet-first and handed over shuffled, so frame placement cannot come out right
by accident; dciodvfy (dicom3tools) must report no error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from models.labels import Label
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.dicom import write_ct_series
from models.phantoms.writer import series_meta
from node.results import codes as rc
from node.results.equipment import software_version
from node.results.organ_seg import (
    ORGAN_SEG_SERIES_NUMBER,
    SEGMENT_RGB,
    build_organ_seg,
    segment_name,
)
from node.results.source import SourceSeriesError, slice_indices
from node.volume import read_ct
from tests.tools import dciodvfy_errors

OPTIONS = CaseOptions(matrix=128, protocol=(3.0, 3.0), n_slices=40)
ALGORITHM = ("ctnode-organs-test", "0.1")


@dataclasses.dataclass
class Phantom:
    ct: sitk.Image
    source: list[pydicom.Dataset]  # shuffled
    labels: sitk.Image  # the phantom's Label values on the CT grid


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Phantom:
    case = generate_case(4, 2, OPTIONS)
    acquisition = dataclasses.replace(case.acquisition, patient_position="FFS")
    if case.acquisition.patient_position != "FFS":  # same patient, feet-first grid
        case = dataclasses.replace(
            case,
            acquisition=acquisition,
            grid=acquisition.grid(),
            image=np.ascontiguousarray(case.image[::-1, :, ::-1]),
            labels=np.ascontiguousarray(case.labels[::-1, :, ::-1]),
        )
    folder = tmp_path_factory.mktemp("organ_seg_ct")
    paths = write_ct_series(case.grid.to_image(case.image), series_meta(case, "o", False), folder)
    ct = read_ct(folder)
    order = np.random.default_rng(3).permutation(len(paths))
    labels = sitk.GetImageFromArray(case.labels)
    labels.CopyInformation(ct)
    return Phantom(ct, [pydicom.dcmread(paths[i]) for i in order], labels)


def with_labels(phantom: Phantom, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(phantom.ct)
    return image


def test_every_label_has_a_code_and_the_dictionary_agrees() -> None:
    """Each Label but background is coded; where pydicom's SNOMED CT dictionary has the
    concept, value and meaning are the dictionary's."""
    assert set(rc.ORGAN_CODES) == set(Label) - {Label.BACKGROUND}
    by_value = {}
    for name in dir(codes.SCT):
        code = getattr(codes.SCT, name, None)
        if code is not None and hasattr(code, "value"):
            by_value.setdefault(code.value, set()).add(code.meaning.lower())
    checked = 0
    for label, code in rc.ORGAN_CODES.items():
        assert code.category in (
            rc.ANATOMICAL_STRUCTURE,
            rc.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            rc.PHYSICAL_OBJECT,
        ), label
        if code.type.value in by_value:
            assert code.type.meaning.lower() in by_value[code.type.value], label
            checked += 1
        assert label in SEGMENT_RGB and segment_name(label)
    assert checked >= len(rc.ORGAN_CODES) - 4  # only the sided lung/kidney codes are not there
    assert rc.ORGAN_CODES[Label.HEART].type.value == "80891009"
    assert rc.ORGAN_CODES[Label.LEFT_LUNG].type.value == "44029006"
    assert rc.ORGAN_CODES[Label.RIGHT_LUNG].type.value == "3341006"
    assert rc.ANATOMICAL_STRUCTURE.value == codes.SCT.AnatomicalStructure.value


def test_seg_of_the_phantom_organs(phantom: Phantom, tmp_path: Path) -> None:
    array = sitk.GetArrayFromImage(phantom.labels)
    array[array == Label.HEART] = 0  # an organ the model did not find gets no segment
    labels = with_labels(phantom, array)
    present = [Label(v) for v in np.unique(array) if v != 0]
    assert Label.AORTA in present and Label.TRACHEA in present and len(present) > 8

    seg = build_organ_seg(phantom.source, phantom.ct, labels, *ALGORITHM)
    assert seg is not None
    path = tmp_path / "organs.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    ds = hd.seg.segread(path)
    first = phantom.source[0]
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.PatientID == first.PatientID
    assert (ds.Manufacturer, ds.SoftwareVersions) == ("ctnode", software_version())
    assert ds.SeriesNumber == ORGAN_SEG_SERIES_NUMBER
    assert ds.SegmentationType == "BINARY"
    assert "not a diagnosis" in ds.SeriesDescription

    # One segment per present organ, numbered in Label order, coded, named, coloured.
    assert [s.SegmentNumber for s in ds.SegmentSequence] == list(range(1, len(present) + 1))
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [segment_name(v) for v in present]
    assert "Heart" not in [s.SegmentLabel for s in ds.SegmentSequence]
    for item, label in zip(ds.SegmentSequence, present, strict=True):
        code = rc.ORGAN_CODES[label]
        assert rc.same_code(item.SegmentedPropertyCategoryCodeSequence[0], code.category)
        assert rc.same_code(item.SegmentedPropertyTypeCodeSequence[0], code.type)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ALGORITHM
        expected_lab = hd.color.CIELabColor.from_rgb(*SEGMENT_RGB[label]).value
        assert tuple(item.RecommendedDisplayCIELabValue) == tuple(expected_lab)
    names = {s.SegmentLabel for s in ds.SegmentSequence}
    assert {"Aorta", "Left lung", "Right lung", "Trachea", "Spinal cord"} <= names

    # Frames decode to the exact organ mask of the slice each source instance holds.
    uids = [d.SOPInstanceUID for d in phantom.source]
    pixels = ds.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    order = slice_indices(phantom.source, phantom.ct)
    for number, label in enumerate(present):
        assert np.array_equal(pixels[..., number] > 0, (array == label)[order]), label

    # Only non-empty (slice, organ) frames, each on its source instance's plane.
    non_empty = sum(int((array == label).any(axis=(1, 2)).sum()) for label in present)
    assert ds.NumberOfFrames == non_empty
    position_of = {
        d.SOPInstanceUID: [float(v) for v in d.ImagePositionPatient] for d in phantom.source
    }
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source_uid = (
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, position_of[source_uid], atol=1e-4)


def test_sided_structures_carry_a_laterality_modifier(phantom: Phantom, tmp_path: Path) -> None:
    """Adrenal glands have no sided concept: generic type + Left/Right modifier, dciodvfy clean;
    the flag is named in the Content Description."""
    array = np.zeros(phantom.labels.GetSize()[::-1], np.uint8)
    array[10:14, 40:50, 30:40] = Label.LEFT_ADRENAL
    array[10:14, 40:50, 80:90] = Label.RIGHT_ADRENAL
    array[20:24, 60:70, 60:70] = Label.HEART
    flags = ["heart_not_in_field_of_view"]
    seg = build_organ_seg(
        phantom.source, phantom.ct, with_labels(phantom, array), *ALGORITHM, flags=flags
    )
    path = tmp_path / "sided.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.ContentDescription.startswith("heart_not_in_field_of_view")
    sides = {}
    for item in ds.SegmentSequence:
        type_item = item.SegmentedPropertyTypeCodeSequence[0]
        modifiers = type_item.get("SegmentedPropertyTypeModifierCodeSequence", [])
        sides[item.SegmentLabel] = [m.CodeValue for m in modifiers]
    assert sides == {
        "Heart": [],
        "Left adrenal gland": [rc.LEFT.value],
        "Right adrenal gland": [rc.RIGHT.value],
    }


def test_no_organ_no_seg_and_a_wrong_grid_is_refused(phantom: Phantom) -> None:
    empty = with_labels(phantom, np.zeros(phantom.labels.GetSize()[::-1], np.uint8))
    assert build_organ_seg(phantom.source, phantom.ct, empty, *ALGORITHM) is None
    shifted = sitk.Image(phantom.labels)
    shifted.SetOrigin([v + 1.0 for v in phantom.labels.GetOrigin()])
    with pytest.raises(SourceSeriesError, match="origin"):
        build_organ_seg(phantom.source, phantom.ct, shifted, *ALGORITHM)
    unknown = sitk.GetArrayFromImage(phantom.labels)
    unknown[0, 0, 0] = 99
    with pytest.raises(ValueError, match="99"):
        build_organ_seg(phantom.source, phantom.ct, with_labels(phantom, unknown), *ALGORITHM)
