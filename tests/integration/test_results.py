"""SR, SEG and Secondary Capture built on a phantom CT series, written, and checked.

The same phantom is written head-first and feet-first (feet-first: the same voxels with the
column and slice order reversed, as the generator's FFS grid stores them), read back with
node.volume.read_ct, and given a CalciumResult whose feedback maps are the reference
calculator's voxel contributions on a sub-grid of the scan: so the feedback regions must be
exactly the counted calcium voxels, and every check below has an exact answer.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from models.agatston import cac_drs, risk_category, voxel_contributions
from models.calcium.result import CalciumResult, paste_into_scan
from models.labels import ARTERIES
from models.phantoms.case import Case, CaseOptions, generate_case
from models.phantoms.dicom import write_ct_series
from models.phantoms.writer import series_meta
from node.results import codes as rc
from node.results.capture import build_overlay_capture, choose_slice, render_overlay, save_png
from node.results.equipment import software_version
from node.results.regions import feedback_regions
from node.results.seg import build_feedback_seg
from node.results.source import SourceSeriesError, slice_indices
from node.results.sr import build_calcium_sr, read_calcium_sr
from node.volume import read_ct
from tests.tools import dciodvfy_errors, require_tool

SEED = 8  # category 3 with calcium in all three arteries at this matrix
OPTIONS = CaseOptions(matrix=160, protocol=(3.0, 3.0), n_slices=40)
MARGIN = 3  # voxels around the calcium in the feedback sub-grid


@dataclasses.dataclass
class Phantom:
    position: str
    case: Case
    ct: sitk.Image
    source: list[pydicom.Dataset]  # shuffled, as a PACS may send them
    result: CalciumResult
    expected: dict[str, np.ndarray]  # counted calcium voxels per artery, volume (z, y, x)


def in_position(case: Case, position: str) -> Case:
    """The same patient scanned head- or feet-first: the FFS grid runs columns towards -x and
    slices towards -z, the HFS grid the other way, so one is the other's arrays reversed along
    those two axes."""
    if case.acquisition.patient_position == position:
        return case
    acquisition = dataclasses.replace(case.acquisition, patient_position=position)
    return dataclasses.replace(
        case,
        acquisition=acquisition,
        grid=acquisition.grid(),
        image=np.ascontiguousarray(case.image[::-1, :, ::-1]),
        labels=np.ascontiguousarray(case.labels[::-1, :, ::-1]),
    )


def feedback_from_truth(case: Case, ct: sitk.Image) -> tuple[dict, dict]:
    """Per-artery feedback images (AU per voxel) on one sub-grid around all calcium, and the
    counted voxels per artery on the whole grid."""
    contributions = voxel_contributions(case.image, case.labels, case.spacing_zyx)
    full, expected = {}, {}
    for artery, (zyx, value) in contributions.items():
        array = np.zeros(case.image.shape, np.float32)
        array[tuple(zyx)] = value
        full[artery] = array
        expected[artery] = array > 0
    counted = np.argwhere(np.any([m for m in expected.values()], axis=0))
    low = np.maximum(counted.min(axis=0) - MARGIN, 0)
    high = np.minimum(counted.max(axis=0) + MARGIN + 1, case.image.shape)
    feedback = {}
    for artery, array in full.items():
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ct)
        (k0, j0, i0), (k1, j1, i1) = low, high
        feedback[artery] = image[int(i0) : int(i1), int(j0) : int(j1), int(k0) : int(k1)]
    return feedback, expected


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def phantom(request, tmp_path_factory) -> Phantom:
    case = in_position(generate_case(SEED, 3, OPTIONS), request.param)
    assert case.acquisition.patient_position == request.param
    folder = tmp_path_factory.mktemp(f"ct_{request.param}")
    paths = write_ct_series(
        case.grid.to_image(case.image), series_meta(case, "results", rle=False), folder
    )
    ct = read_ct(folder)
    order = np.random.default_rng(7).permutation(len(paths))
    source = [pydicom.dcmread(paths[i]) for i in order]
    feedback, expected = feedback_from_truth(case, ct)
    truth = case.truth
    result = CalciumResult(
        agatston_total=truth.total,
        agatston_per_artery=dict(truth.per_artery),
        category=risk_category(truth.total),
        cacdrs=cac_drs(truth.total),
        flags=["registration_failure"] if request.param == "FFS" else [],
        heart_centre_mm=list(case.patient["heart_centre_mm"]),
        transform={},
        feedback=feedback,
        model="ctnode-calcium test-1",
    )
    return Phantom(request.param, case, ct, source, result, expected)


def test_phantom_geometry(phantom: Phantom) -> None:
    """The fixture is what the tests below assume: calcium in every artery, the volume in the
    generator's orientation, and feedback sub-grids that paste back to the truth."""
    assert all(phantom.expected[a].any() for a in ARTERIES)
    assert phantom.ct.GetDirection() == phantom.case.grid.direction
    for artery in ARTERIES:
        pasted = sitk.GetArrayFromImage(
            paste_into_scan(phantom.result.feedback[artery], phantom.ct)
        )
        assert np.array_equal(pasted > 0, phantom.expected[artery])


def test_regions_are_the_counted_voxels(phantom: Phantom) -> None:
    regions = feedback_regions(phantom.result, phantom.ct)
    for artery in ARTERIES:
        assert np.array_equal(regions[artery], phantom.expected[artery])


# --- SR -------------------------------------------------------------------------------


def test_sr(phantom: Phantom, tmp_path: Path) -> None:
    truth = phantom.case.truth
    sr = build_calcium_sr(
        phantom.source,
        phantom.result,
        volume_mm3=truth.volume_mm3,
        volume_per_artery_mm3=truth.volume_per_artery_mm3,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    ds = pydicom.dcmread(path)
    first = phantom.source[0]
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge"):
        assert ds[keyword].value == first[keyword].value
    assert ds.StudyDescription == first.StudyDescription
    assert ds.Manufacturer == "ctnode"
    assert ds.SoftwareVersions == software_version()
    assert "not a diagnosis" in ds.SeriesDescription
    assert (ds.VerificationFlag, ds.CompletionFlag) == ("UNVERIFIED", "COMPLETE")

    report = read_calcium_sr(ds)
    assert report.agatston_total == round(truth.total, 2)
    assert report.agatston_per_artery == {a: round(truth.per_artery[a], 2) for a in ARTERIES}
    assert report.volume_mm3 == round(truth.volume_mm3, 2)
    assert report.volume_per_artery_mm3 == {
        a: round(v, 2) for a, v in truth.volume_per_artery_mm3.items()
    }
    assert (report.category, report.cacdrs) == (
        phantom.result.reported_category,
        phantom.result.reported_cacdrs,
    )
    assert report.flags == phantom.result.flags
    assert (report.algorithm_name, report.algorithm_version) == ("ctnode-calcium", "test-1")
    source_uids = sorted(d.SOPInstanceUID for d in phantom.source)
    assert sorted(report.referenced_sop_instance_uids) == source_uids
    library = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in _walk(ds.ContentSequence)
        if item.ValueType == "IMAGE"
    ]
    assert sorted(library) == source_uids

    total = [
        item
        for item in _walk(ds.ContentSequence)
        if item.ValueType == "NUM"
        and rc.same_code(item.ConceptNameCodeSequence[0], rc.CALCIUM_SCORE)
    ][0]
    children = [c.ConceptCodeSequence[0] for c in total.ContentSequence]
    assert any(rc.same_code(c, rc.AGATSTON_METHOD) for c in children)
    assert any(rc.same_code(c, rc.CORONARY_ARTERY) for c in children)
    texts = [item.TextValue for item in _walk(ds.ContentSequence) if item.ValueType == "TEXT"]
    assert any("Not a diagnosis" in t for t in texts)


def test_sr_carries_the_calcium_volume_of_an_exact_result(phantom: Phantom, tmp_path: Path) -> None:
    """An exact-method result measures the calcium volume: the SR carries it (DCM 122660, mm3),
    total and per artery, without being told, and stays valid; a regression result has none."""
    truth = phantom.case.truth
    exact = dataclasses.replace(
        phantom.result,
        method="exact",
        volume_mm3_total=truth.volume_mm3,
        volume_mm3_per_artery=dict(truth.volume_per_artery_mm3),
    )
    path = tmp_path / "sr.dcm"
    build_calcium_sr(phantom.source, exact).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    report = read_calcium_sr(pydicom.dcmread(path))
    assert report.volume_mm3 == round(truth.volume_mm3, 2) > 0
    assert report.volume_per_artery_mm3 == {
        a: round(truth.volume_per_artery_mm3[a], 2) for a in ARTERIES
    }
    volumes = [
        item
        for item in _walk(pydicom.dcmread(path).ContentSequence)
        if item.ValueType == "NUM"
        and rc.same_code(item.ConceptNameCodeSequence[0], rc.CALCIUM_VOLUME)
    ]
    assert len(volumes) == 4
    assert all(
        v.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm3"
        for v in volumes
    )
    assert read_calcium_sr(build_calcium_sr(phantom.source, phantom.result)).volume_mm3 is None


def test_sr_dsrdump(phantom: Phantom, tmp_path: Path) -> None:
    """DCMTK reads the document as a valid SR and renders the score with its unit."""
    tool = require_tool("dsrdump", "dcmtk")
    path = tmp_path / "sr.dcm"
    build_calcium_sr(phantom.source, phantom.result).save_as(path, enforce_file_format=True)
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    value = f"{round(phantom.result.agatston_total, 2):g}"
    assert f'"Coronary artery calcium score")="{value}" ({{Agatston}},UCUM' in proc.stdout


def test_sr_read_rejects_other_documents(phantom: Phantom) -> None:
    sr = build_calcium_sr(phantom.source, phantom.result)
    del sr.ContentSequence[-2]  # the Imaging Measurements container
    with pytest.raises(ValueError, match="not a ctnode calcium SR"):
        read_calcium_sr(sr)


# --- SEG ------------------------------------------------------------------------------


def test_seg(phantom: Phantom, tmp_path: Path) -> None:
    seg = build_feedback_seg(phantom.source, phantom.ct, phantom.result)
    assert seg is not None
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    ds = hd.seg.segread(path)
    first = phantom.source[0]
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.PatientID == first.PatientID
    assert ds.Manufacturer == "ctnode"
    labels = [s.SegmentLabel for s in ds.SegmentSequence]
    assert [label.split()[0] for label in labels] == list(ARTERIES)
    for number, artery in enumerate(ARTERIES, start=1):
        description = ds.SegmentSequence[number - 1]
        assert rc.same_code(
            description.SegmentedPropertyCategoryCodeSequence[0],
            rc.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        )
        assert rc.same_code(
            description.SegmentedPropertyTypeCodeSequence[0], rc.PATHOLOGIC_CALCIFICATION
        )
        assert rc.same_code(description.AnatomicRegionSequence[0], rc.ARTERY_SITES[artery])

    # Frames decode to the exact mask of the slice each source instance holds.
    uids = [d.SOPInstanceUID for d in phantom.source]
    pixels = ds.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    order = slice_indices(phantom.source, phantom.ct)
    for number, artery in enumerate(ARTERIES):
        assert np.array_equal(pixels[..., number] > 0, phantom.expected[artery][order])

    # Only non-empty (slice, segment) frames, each on its source instance's plane.
    non_empty = sum(int(m.any(axis=(1, 2)).sum()) for m in phantom.expected.values())
    assert ds.NumberOfFrames == non_empty
    position_of = {
        d.SOPInstanceUID: [float(v) for v in d.ImagePositionPatient] for d in phantom.source
    }
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in first.ImageOrientationPatient],
    )
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source_uid = (
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, position_of[source_uid], atol=1e-4)


def test_seg_with_no_region_is_not_produced(phantom: Phantom) -> None:
    empty = {a: image * 0 for a, image in phantom.result.feedback.items()}
    zero = dataclasses.replace(
        phantom.result,
        agatston_total=0.0,
        agatston_per_artery=dict.fromkeys(ARTERIES, 0.0),
        category=0,
        cacdrs="A0",
        feedback=empty,
    )
    assert build_feedback_seg(phantom.source, phantom.ct, zero) is None


# --- Secondary Capture ----------------------------------------------------------------


def test_capture(phantom: Phantom, tmp_path: Path) -> None:
    capture = build_overlay_capture(phantom.source, phantom.ct, phantom.result)
    path = tmp_path / "sc.dcm"
    capture.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    ds = pydicom.dcmread(path)
    first = phantom.source[0]
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.PatientID == first.PatientID
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
    assert ds.BurnedInAnnotation == "YES"
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns, 3) == (800, 1280, 3)

    # It shows the slice with the most calcium and says which instance that is.
    k = choose_slice(phantom.result, phantom.ct)
    # A copy, not a view: a view of the temporary pasted image would outlive its memory.
    counted_per_slice = sum(
        sitk.GetArrayFromImage(paste_into_scan(f, phantom.ct)).sum(axis=(1, 2))
        for f in phantom.result.feedback.values()
    )
    assert k == int(np.argmax(counted_per_slice))
    shown = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert (
        slice_indices(phantom.source, phantom.ct)[
            [d.SOPInstanceUID for d in phantom.source].index(shown)
        ]
        == k
    )

    png = save_png(ds, tmp_path / "overlay.png")
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), ds.pixel_array)


def test_capture_is_radiological_for_both_positions(tmp_path_factory) -> None:
    """Head-first and feet-first storage of one patient render to the same picture."""
    images = []
    for position in ("HFS", "FFS"):
        case = in_position(generate_case(SEED, 3, OPTIONS), position)
        folder = tmp_path_factory.mktemp(f"radiological_{position}")
        write_ct_series(case.grid.to_image(case.image), series_meta(case, "r", False), folder)
        ct = read_ct(folder)
        feedback, _ = feedback_from_truth(case, ct)
        result = CalciumResult(
            case.truth.total, dict(case.truth.per_artery), risk_category(case.truth.total),
            cac_drs(case.truth.total), [], list(case.patient["heart_centre_mm"]), {}, feedback,
        )  # fmt: skip
        images.append(render_overlay(ct, result).rgb)
    assert np.array_equal(images[0], images[1])


def test_capture_with_score_zero_shows_the_heart_centre(phantom: Phantom) -> None:
    zero = dataclasses.replace(
        phantom.result,
        agatston_total=0.0,
        agatston_per_artery=dict.fromkeys(ARTERIES, 0.0),
        category=0,
        cacdrs="A0",
        feedback={},
    )
    k = choose_slice(zero, phantom.ct)
    centre = phantom.ct.TransformPhysicalPointToIndex(zero.heart_centre_mm)[2]
    assert k == int(np.clip(centre, 0, phantom.ct.GetSize()[2] - 1))
    assert render_overlay(phantom.ct, zero).rgb.shape == (800, 1280, 3)


# --- source checks --------------------------------------------------------------------


def test_source_must_match_the_volume(phantom: Phantom) -> None:
    with pytest.raises(SourceSeriesError, match="cover"):
        slice_indices(phantom.source[1:], phantom.ct)
    other = pydicom.Dataset()
    other.update(phantom.source[0])
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(SourceSeriesError, match="SeriesInstanceUID"):
        build_calcium_sr([*phantom.source[1:], other], phantom.result)


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))
