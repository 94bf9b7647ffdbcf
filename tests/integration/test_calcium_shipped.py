"""The shipped calcium model (models/weights): integrity, accuracy on a fixed phantom, the CLI.

The held-out evaluation (200+ phantoms, ICC, kappa) is `python -m training.calcium.evaluate`
and its figures are in the model card; here a fixed phantom guards against a broken model
file, preprocessing or inference path with a tolerance taken from that evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.agatston import risk_category
from models.calcium.inference import MANIFEST, MIN_NCC, WEIGHTS_DIR, CalciumScorer
from models.files import sha256
from models.phantoms.case import CaseOptions, generate_case
from training.calcium.fov_check import variants as fov_variants
from training.calcium.prepare import heart_centre

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / MANIFEST).exists(),
    reason="no calcium model is shipped yet (docs/models/calcium.md); these tests "
    "check the shipped weights once models/weights holds them",
)

# Stated tolerance for the fixed phantoms: the larger of 30 Agatston units and 50 % of the
# truth, the bound that held for 98 % of the 200 held-out phantoms of the shipped model's
# evaluation (models/weights/calcium_evaluation.json, version 2.0; max(15, 25 %) held for
# 96.5 %). A broken
# weight file, preprocessing or inference path misses it by far more.
ABS_TOLERANCE = 30.0
REL_TOLERANCE = 0.5


@pytest.fixture(scope="module")
def scorer() -> CalciumScorer:
    return CalciumScorer(device="cpu")


def test_shipped_files_match_their_cards_and_stay_small() -> None:
    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    for name, digest in manifest["sha256"].items():
        path = WEIGHTS_DIR / name
        assert sha256(path) == digest, name
        assert path.stat().st_size < 5 * 2**20, f"{name} is over 5 MB"
    for card in ("calcium_registration.md", "calcium_score.md"):
        text = (WEIGHTS_DIR / card).read_text()
        assert manifest["sha256"]["calcium_score.pt"] in text
        assert "training" in text.lower()


@pytest.mark.parametrize(
    ("seed", "category"), [(20261127, 3), (20261128, 0), (20261129, 2), (20261130, 4)]
)
def test_fixed_phantom_scores_within_the_stated_tolerance(
    scorer: CalciumScorer, seed: int, category: int
) -> None:
    case = generate_case(seed, category, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    truth = case.truth.total
    result = scorer.score(case.grid.to_image(case.image))
    tolerance = max(ABS_TOLERANCE, REL_TOLERANCE * truth)
    assert abs(result.agatston_total - truth) <= tolerance, (result.agatston_total, truth)
    assert abs(result.category - risk_category(truth)) <= 1
    assert not result.flags


def test_shipped_default_is_the_exact_method_at_its_chosen_threshold(
    scorer: CalciumScorer,
) -> None:
    """Version 2.2 ships the exact method (the network labels, models.agatston measures) at the
    presence threshold select_exact chose; its results carry the calcium volume and the direct
    regression beside the score."""
    score = json.loads((WEIGHTS_DIR / MANIFEST).read_text())["score"]
    assert scorer.method == score["method"] == "exact"
    assert scorer.exact_threshold == score["exact"]["presence_threshold"]
    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    result = scorer.score(case.grid.to_image(case.image))
    truth = case.truth
    assert result.method == "exact" and result.regression_total is not None
    assert abs(result.volume_mm3_total - truth.volume_mm3) <= max(
        ABS_TOLERANCE, REL_TOLERANCE * truth.volume_mm3
    )
    assert result.volume_mm3_total == pytest.approx(sum(result.volume_mm3_per_artery.values()))
    # The feedback is each counted voxel's contribution: it adds up to the score.
    feedback = sum(sitk_sum(image) for image in result.feedback.values())
    assert feedback == pytest.approx(result.agatston_total, rel=1e-5)


def sitk_sum(image) -> float:
    import SimpleITK as sitk

    return float(sitk.GetArrayViewFromImage(image).sum(dtype=np.float64))


def test_heart_search_is_on_as_shipped_and_finds_the_heart_the_network_misses(
    scorer: CalciumScorer,
) -> None:
    """Version 2.0 ships with the search on (its coronary region is sized for the searched
    centre). On this phantom the network alone places the heart centre 38 mm (when written)
    from the truth and the search brings it to 9 mm; 15 mm leaves room for float
    differences."""
    case = generate_case(20261129, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    truth = heart_centre(case.patient)
    searched, transform, _ = scorer.locate_heart(ct)
    assert len(transform["heart_search_mm"]) == 3
    assert np.linalg.norm(searched - truth) <= 15.0
    centre, transform, _ = CalciumScorer(device="cpu", heart_search=False).locate_heart(ct)
    assert "heart_search_mm" not in transform
    assert np.linalg.norm(centre - truth) > 25.0  # the case the search is for


def test_ctnode_score_prints_the_json_for_a_phantom_dicom_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from models.phantoms.writer import write_case
    from node.cli import app

    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    folder = write_case(case, tmp_path / "case", dicom=True)
    run = CliRunner().invoke(app, ["score", str(folder / "dicom"), "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert set(result["agatston_per_artery"]) == {"LAD", "LCX", "RCA"}
    for key in ("agatston_total", "category", "cacdrs", "flags"):
        assert key in result
    assert abs(result["agatston_total"] - case.truth.total) <= max(
        ABS_TOLERANCE, REL_TOLERANCE * case.truth.total
    )


def test_stated_tolerance_is_what_the_held_out_evaluation_showed() -> None:
    evaluation = json.loads((WEIGHTS_DIR / "calcium_evaluation.json").read_text())
    # "predicted" is the method the manifest shipped when it was evaluated: the shipped one.
    assert evaluation.get("method", "regression") == json.loads(
        (WEIGHTS_DIR / MANIFEST).read_text()
    )["score"].get("method", "regression")
    cases = evaluation["cases"]
    assert len(cases) >= 200
    within = [
        abs(c["predicted"] - c["truth"]) <= max(ABS_TOLERANCE, REL_TOLERANCE * c["truth"])
        for c in cases
    ]
    assert sum(within) / len(within) >= 0.97


def test_feedback_of_a_scan_without_calcium_is_a_zero_map_on_its_grid(tmp_path: Path) -> None:
    import SimpleITK as sitk
    from typer.testing import CliRunner

    from node.cli import app
    from tests.tools import require_real_data

    folder = require_real_data("lung_pet_ct_dx_A0001", "series_soft_kernel")
    out = tmp_path / "feedback.nii.gz"
    run = CliRunner().invoke(app, ["score", str(folder), "--json", "--feedback", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["agatston_total"] == 0.0
    image = sitk.ReadImage(str(out))
    assert image.GetSize() == (512, 512, 64)  # the scan's own grid (dcm2niix test: 512x512x64)
    assert float(sitk.GetArrayViewFromImage(image).max()) == 0.0


def test_a_cardiac_field_of_view_is_scored_and_a_cut_heart_is_indeterminate(
    scorer: CalciumScorer,
) -> None:
    """Issue 25 item 2: a dedicated calcium-scoring reconstruction (220 mm around the heart,
    from above it to below it; training/calcium/fov_check.py) is scored as the whole chest is,
    without `heart_outside_field_of_view`, although much of the network's 192 x 192 x 180 mm
    box lies outside it, and so is a 190 mm one, without `registration_failure`; the same field
    of view ending at the heart's middle is flagged and its category withheld."""
    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    crops = fov_variants(case, ct, np.random.default_rng(0))
    full, cardiac = scorer.score(ct), scorer.score(crops["cardiac"])
    crop = crops["cardiac"]  # a real crop: 220 mm across, shorter than the chest scan
    assert crop.GetSize()[0] * crop.GetSpacing()[0] <= 221.0
    assert crop.GetSize()[2] < ct.GetSize()[2]
    assert not cardiac.flags
    assert cardiac.reported_category == full.reported_category == risk_category(case.truth.total)
    assert cardiac.agatston_total == pytest.approx(full.agatston_total, rel=0.05)
    # 190 mm across: the registration's whole-grid correlation is low (a small part of its
    # 400 mm grid holds the scan); the heart search's correlation vouches for the heart.
    narrow = scorer.score(crops["cardiac_190"])
    assert narrow.transform["atlas_correlation"] < MIN_NCC
    assert not narrow.flags
    assert narrow.reported_category == full.reported_category
    cut = scorer.score(crops["cut_below"])
    assert "heart_outside_field_of_view" in cut.flags
    assert cut.reported_category is None


def _reoriented(image, flips: tuple[bool, bool, bool]):
    """The same voxels at the same physical places, stored with the x, y or z axis reversed:
    as a prone (x and y) or feet-first (z) acquisition is stored."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # z, y, x
    reverse = tuple(slice(None, None, -1) if f else slice(None) for f in flips[::-1])
    out = sitk.GetImageFromArray(np.ascontiguousarray(array[reverse]))
    out.SetSpacing(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(
        [-1.0 if f else 1.0 for f in flips]
    )
    out.SetDirection(direction.ravel().tolist())
    corner = [size - 1 if f else 0 for size, f in zip(image.GetSize(), flips, strict=True)]
    out.SetOrigin(image.TransformIndexToPhysicalPoint(corner))
    return out


@pytest.mark.parametrize(
    "flips", [(True, True, False), (False, False, True), (True, True, True)],
    ids=["prone", "feet-first", "prone-feet-first"],
)  # fmt: skip
def test_a_prone_or_feet_first_scan_scores_as_the_supine_one(
    scorer: CalciumScorer, flips: tuple[bool, bool, bool]
) -> None:
    """Issue 25 item 2: the scorer works in patient coordinates, so how the scan's axes are
    stored (prone: rows and columns reversed; feet-first: slices reversed) does not matter."""
    case = generate_case(20261129, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    supine, turned = scorer.score(ct), scorer.score(_reoriented(ct, flips))
    assert not turned.flags
    assert turned.reported_category == supine.reported_category
    assert turned.agatston_total == pytest.approx(supine.agatston_total, rel=0.05)
    assert np.linalg.norm(np.subtract(turned.heart_centre_mm, supine.heart_centre_mm)) < 10.0


def test_coverage_tells_the_coronary_extent_from_the_wider_region(scorer: CalciumScorer) -> None:
    import SimpleITK as sitk

    # A 150 x 150 x 120 mm scan centred on the located heart: the coronary extent of the
    # training phantoms (about 102 x 108 x 95 mm) lies inside, the region around it
    # (152 x 158 x 145 mm, the extent widened by the location error) does not.
    assert scorer.core_bounds is not None
    image = sitk.Image([75, 75, 48], sitk.sitkInt16)
    image.SetSpacing((2.0, 2.0, 2.5))
    image.SetOrigin((-74.0, -74.0, -58.75))
    cover = scorer.coverage(image, np.zeros(3))
    assert cover["coronary_core"] == 1.0
    assert cover["coronary_region"] < 0.8
    assert cover["score_box"] < cover["coronary_region"]
    # The shipped rule looks at the extent: this heart is whole. A manifest without the
    # extent falls back to 2.3's region rule, which calls it cut.
    assert not scorer.heart_cut(image, np.zeros(3))
    without_extent = CalciumScorer(device="cpu")
    without_extent.core_bounds = None
    assert cover["coronary_region"] < 0.7 and without_extent.heart_cut(image, np.zeros(3))
