"""The contrast gate and honest uncertainty (issue 25 items 5 and 6).

- models/calcium/contrast.py on real scans: the contrast crop is flagged, both kernels of the
  real non-contrast chest CT are not (blood-pool statistic around the registration's heart
  centre, shipped or tiny model);
- the header evidence travels from the DICOM files to the volume;
- the calcium pipeline on a contrast phantom (image evidence) and on a header-flagged phantom:
  the job's results are an SR that says "not scorable: contrast-enhanced" with no score item
  (dciodvfy, dsrdump), a Secondary Capture, and no SEG;
- results that a quality flag makes untrusted: SR and overlay say indeterminate.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from models.agatston import cac_drs, risk_category
from models.calcium.contrast import (
    ENHANCED_ABOVE_HU,
    assess_contrast,
    blood_pool_hu,
    header_names_contrast,
)
from models.calcium.result import CONTRAST_FLAG, CalciumResult
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.writer import write_case
from node.config import load_settings
from node.pipelines.calcium import CalciumPipeline, ScorerCache, score_summary
from node.pipelines.heart_check import SegmenterCache
from node.pipelines.series_reading import SeriesFiles
from node.results import codes as rc
from node.results.capture import render_overlay
from node.results.sr import build_calcium_sr, read_calcium_sr
from node.volume import read_ct
from tests.tools import dciodvfy_errors, require_real_data, require_tool

OPTIONS = CaseOptions(matrix=160, protocol=(3.0, 3.0), n_slices=50)


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


# --- the assessment itself -----------------------------------------------------------------


def test_header_values_that_name_contrast() -> None:
    assert header_names_contrast("IODINE") and header_names_contrast("Omnipaque 350")
    assert header_names_contrast("IV")
    for none in ("", "  ", None, "NONE", "no", "N/A"):
        assert not header_names_contrast(none)


def test_blood_pool_separates_a_contrast_phantom_from_its_plain_twin() -> None:
    """Same seed, same anatomy and noise: the blood differs (and so may the lesion set that
    reaches the category). At the true heart centre and 30 mm from it (a registration error),
    plain stays below the threshold and enhanced (at the low end, 200 HU) above."""
    plain = generate_case(41, 2, OPTIONS)
    enhanced = generate_case(41, 2, dataclasses.replace(OPTIONS, contrast_hu=200.0))
    assert plain.patient["heart_centre_mm"] == enhanced.patient["heart_centre_mm"]
    centre = np.asarray(plain.patient["heart_centre_mm"])
    for offset in ([0, 0, 0], [30, 0, 0], [0, 0, -30]):
        at = centre + np.asarray(offset, float)
        low = blood_pool_hu(plain.grid.to_image(plain.image), at)
        high = blood_pool_hu(enhanced.grid.to_image(enhanced.image), at)
        assert low is not None and high is not None
        assert low < ENHANCED_ABOVE_HU - 30 < ENHANCED_ABOVE_HU + 50 < high, (offset, low, high)
    assessed = assess_contrast(enhanced.grid.to_image(enhanced.image), centre)
    assert assessed.enhanced and assessed.evidence[0].startswith("image: blood pool")
    assert not assess_contrast(plain.grid.to_image(plain.image), centre).enhanced
    # Far outside the scan there is nothing to measure, and no evidence either way.
    assert blood_pool_hu(plain.grid.to_image(plain.image), centre + 1000.0) is None


@pytest.fixture(scope="module")
def scorer(weights: Path):
    from models.calcium.inference import CalciumScorer

    return CalciumScorer(weights, device="cpu")


def test_real_contrast_crop_is_flagged_and_not_scored(scorer) -> None:
    path = require_real_data("totalseg_examples", "pulmonary_report", "ct_cropped.nii.gz")
    result = scorer.score(read_ct(path))
    assert not result.scored and result.agatston_total is None
    assert CONTRAST_FLAG in result.flags and result.indeterminate
    assert result.contrast["blood_pool_hu"] > 300, result.contrast
    report = result.to_dict()
    assert (report["category"], report["category_name"], report["cacdrs"]) == (
        None,
        "indeterminate",
        None,
    )


@pytest.mark.parametrize("series", ["series_lung_kernel", "series_soft_kernel"])
def test_real_non_contrast_series_is_not_flagged(scorer, series: str) -> None:
    result = scorer.score(read_ct(require_real_data("lung_pet_ct_dx_A0001", series)))
    assert result.scored and CONTRAST_FLAG not in result.flags
    assert result.contrast["blood_pool_hu"] < ENHANCED_ABOVE_HU - 30, result.contrast
    assert not result.contrast["evidence"]


# --- the job: pipeline to results ----------------------------------------------------------


@pytest.fixture(scope="module")
def node_settings(weights: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("contrast_job")
    settings = load_settings(environ={})
    return dataclasses.replace(
        settings,
        calcium=dataclasses.replace(
            settings.calcium, weights_dir=weights, device="cpu", min_slices=30
        ),
        results=dataclasses.replace(settings.results, outbox_dir=root / "outbox"),
    ), root


def _add_contrast_header(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ContrastBolusAgent = "IODINE"
        ds.ContrastBolusRoute = "IV"
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("evidence", ["image", "header"])
def test_contrast_job_gives_a_not_scorable_sr_a_capture_and_no_seg(
    node_settings, evidence: str, tmp_path: Path
) -> None:
    settings, root = node_settings
    contrast_hu = 300.0 if evidence == "image" else None  # header: an unenhanced image
    case = generate_case(42, 3, dataclasses.replace(OPTIONS, contrast_hu=contrast_hu))
    folder = write_case(case, tmp_path / "case", dicom=True) / "dicom"
    paths = sorted(folder.glob("*.dcm"))
    if evidence == "header":
        _add_contrast_header(paths)
    log: list[tuple[str, str]] = []
    pipeline = CalciumPipeline(settings, ScorerCache(settings), SegmenterCache(settings))
    outputs = pipeline.run(
        7, SeriesFiles("1.2.3", folder, paths), lambda stage, message: log.append((stage, message))
    )
    assert sorted(o.kind for o in outputs) == ["capture", "sr"]  # no SEG
    stages = dict(log)
    assert stages["score"].startswith("not scorable: contrast-enhanced")
    assert "category indeterminate" in stages["score"] and CONTRAST_FLAG in stages["score"]
    assert "no SEG: not scored" in stages["results"]

    outbox = Path(settings.results.outbox_dir)
    sr_path = outbox / next(o.path for o in outputs if o.kind == "sr")
    assert dciodvfy_errors(sr_path) == []
    ds = pydicom.dcmread(sr_path)
    report = read_calcium_sr(ds)
    assert report.agatston_total is None and report.agatston_per_artery == {}
    assert (report.category, report.cacdrs) == (None, None)
    assert report.not_scorable == "Contrast-enhanced"
    assert CONTRAST_FLAG in report.flags
    assert not [i for i in _walk(ds.ContentSequence) if i.ValueType == "NUM"]
    texts = [i.TextValue for i in _walk(ds.ContentSequence) if i.ValueType == "TEXT"]
    expected = "header: Contrast/Bolus Agent present" if evidence == "header" else "image: blood"
    assert any(t.startswith("Not scorable: contrast-enhanced") and expected in t for t in texts)
    dump = subprocess.run(
        [require_tool("dsrdump", "dcmtk"), str(sr_path)], capture_output=True, text=True
    )
    assert dump.returncode == 0 and dump.stderr.strip() == ""
    assert '"Not scorable")=(CONTRAST,99CTNODE,"Contrast-enhanced")' in dump.stdout
    assert '"Coronary calcium risk category")=(82334004,SCT,"Indeterminate")' in dump.stdout

    capture = outbox / next(o.path for o in outputs if o.kind == "capture")
    assert dciodvfy_errors(capture) == []
    assert pydicom.dcmread(capture).BurnedInAnnotation == "YES"


# --- untrusted results: indeterminate ------------------------------------------------------


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory):
    """A scored phantom whose result carries registration_failure, on a written series."""
    case = generate_case(8, 3, OPTIONS)
    folder = write_case(case, tmp_path_factory.mktemp("untrusted") / "case", dicom=True) / "dicom"
    paths = sorted(folder.glob("*.dcm"))
    total = case.truth.total
    result = CalciumResult(
        total, dict(case.truth.per_artery), risk_category(total), cac_drs(total),
        ["registration_failure"], list(case.patient["heart_centre_mm"]), {}, {},
        model="ctnode-calcium test-1",
    )  # fmt: skip
    return case, read_ct(folder), [pydicom.dcmread(p) for p in paths], result


def test_untrusted_result_reports_no_category(untrusted) -> None:
    case, _, _, result = untrusted
    assert result.indeterminate and result.reported_category is None
    assert result.category == case.truth.category  # what the number falls into, for the record
    report = result.to_dict()
    assert report["category"] is None and report["category_name"] == "indeterminate"
    assert report["measured_category"] == case.truth.category
    assert report["untrusted_flags"] == ["registration_failure"]
    assert "NOT VALID" in score_summary(result) and "category indeterminate" in score_summary(
        result
    )
    trusted = dataclasses.replace(result, flags=["too_few_slices"])
    assert not trusted.indeterminate and trusted.to_dict()["category"] == case.truth.category
    # A flag added later (the organ heart check) makes the result indeterminate at once.
    trusted.flags.append("heart_not_in_field_of_view")
    assert trusted.reported_category is None


def test_untrusted_sr_marks_the_numbers_and_the_category(untrusted, tmp_path: Path) -> None:
    case, _, source, result = untrusted
    path = tmp_path / "sr.dcm"
    build_calcium_sr(source, result).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    report = read_calcium_sr(ds)
    assert report.agatston_total == round(case.truth.total, 2)  # measured, kept ...
    assert not report.values_valid  # ... and marked not valid
    assert (report.category, report.cacdrs) == (None, None)
    nums = [i for i in _walk(ds.ContentSequence) if i.ValueType == "NUM"]
    assert len(nums) == 4
    for item in nums:
        assert rc.same_code(item.NumericValueQualifierCodeSequence[0], rc.VALUE_INDETERMINATE)
    texts = [i.TextValue for i in _walk(ds.ContentSequence) if i.ValueType == "TEXT"]
    assert any(t.startswith("Risk category indeterminate") for t in texts)


def test_untrusted_overlay_says_indeterminate(untrusted) -> None:
    """The panel of an untrusted result differs from the trusted one's where the score and the
    category are written; a not-scored result renders too (the heart-centre slice)."""
    _, ct, _, result = untrusted
    shown = render_overlay(ct, result).rgb
    trusted = render_overlay(ct, dataclasses.replace(result, flags=[])).rgb
    panel = np.s_[:, 800:]
    assert not np.array_equal(shown[panel], trusted[panel])
    assert np.array_equal(shown[:, :800], trusted[:, :800])  # the image part is the same
    not_scored = CalciumResult.not_scored([], result.heart_centre_mm, {}, {"evidence": []})
    assert render_overlay(ct, not_scored).rgb.shape == (800, 1280, 3)


def test_ctnode_score_prints_not_scorable(weights: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from node.cli import app

    case = generate_case(43, 2, dataclasses.replace(OPTIONS, contrast_hu=250.0))
    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(case.grid.to_image(case.image), str(volume))
    runner = CliRunner()
    as_json = runner.invoke(app, ["score", str(volume), "--json", "--weights", str(weights)])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report["scored"] is False and report["agatston_total"] is None
    assert report["category_name"] == "indeterminate" and CONTRAST_FLAG in report["flags"]
    assert report["contrast"]["enhanced"] and report["contrast"]["blood_pool_hu"] > 150
    text = runner.invoke(app, ["score", str(volume), "--weights", str(weights)])
    assert text.exit_code == 0, text.output
    assert "not scorable: contrast-enhanced" in text.output and "indeterminate" in text.output
