"""The calcium models' training and inference machinery, end to end on a tiny configuration.

Prepares three phantoms, trains both networks for a couple of steps on the CPU, installs the
result into a temporary weights folder (not models/weights) and scores a phantom with it. The
numbers are meaningless after two steps; what is checked is that every stage fits together:
shapes, geometry of the decision feedback, sha256 checks, flags and determinism.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.calcium.inference import CalciumScorer, ModelFileError
from models.calcium.result import paste_into_scan
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.plan import case_plan
from models.phantoms.variety import BROAD
from training.calcium import prepare, ship, train_registration, train_score


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("calcium")
    assert prepare.main(["--out", str(work / "data"), "--n", "3", "--seed", "5"]) == 0
    assert len(list((work / "data").glob("sample_*.npz"))) == 3
    reg_args = ["--data", str(work / "data"), "--out", str(work / "reg"), "--iterations", "2"]
    assert train_registration.main([*reg_args, "--batch", "2", "--device", "cpu"]) == 0
    score_args = ["--data", str(work / "data"), "--out", str(work / "score"), "--iterations", "2"]
    assert train_score.main([*score_args, "--batch", "1", "--device", "cpu"]) == 0
    weights = work / "weights"
    ship_args = ["--registration", str(work / "reg"), "--score", str(work / "score")]
    assert ship.main([*ship_args, "--weights", str(weights), "--data-note", "test"]) == 0
    return weights


def test_prepared_sample_holds_what_training_needs(tiny_models: Path) -> None:
    sample = np.load(next((tiny_models.parent / "data").glob("sample_*.npz")))
    assert sample["registration"].shape == (80, 80, 80)
    box = sample["score_box"].astype(np.float32)
    assert box.shape == (4, 88, 78, 78)
    # The peak channel is never below the mean one; the calcium fraction is a fraction.
    assert (box[1] >= box[0] - 1).all()
    assert box[2].min() >= 0 and box[2].max() <= 1
    assert sample["scores"].shape == (3,)
    # The sparse score density is the truth's own: it sums to each artery's score.
    density = np.bincount(sample["density_artery"], sample["density_value"], minlength=3)
    np.testing.assert_allclose(density, sample["scores"], rtol=1e-5, atol=1e-3)

    # ... and it lies on the voxels of the candidate score, binned the same way: what the
    # candidate score holds there is the truth (float16), what the network must pick out.
    scored = 0
    for path in sorted((tiny_models.parent / "data").glob("sample_*.npz")):
        with np.load(path) as sample:
            on_truth = np.zeros(sample["score_box"].shape[1:], np.float32)
            zyx = tuple(sample["density_zyx"].astype(int).T)
            np.add.at(on_truth, zyx, sample["density_value"])
            held = sample["score_box"][3].astype(np.float32)[on_truth > 0]
            truth = float(sample["scores"].sum())
        np.testing.assert_allclose(held.sum(), truth, rtol=2e-3, atol=0.05)
        assert (held >= on_truth[on_truth > 0] * 0.999 - 0.01).all()
        scored += truth > 0
    assert scored >= 1, "the plan of seed 5 has phantoms with coronary calcium"


def test_prepare_generator_1_leaves_out_only_the_incidental_calcifications(tmp_path: Path) -> None:
    """--generator 1 remakes the samples earlier models were trained on: the same case (seed 8's
    first phantom has calcified lymph nodes in version 2) without the incidental calcium."""
    made = {}
    for generator in ("1", "2"):
        out = tmp_path / generator
        assert (
            prepare.main(["--out", str(out), "--n", "1", "--seed", "8", "--generator", generator])
            == 0
        )
        made[generator] = np.load(out / "sample_00000.npz")
    old, new = made["1"], made["2"]
    np.testing.assert_array_equal(old["scores"], new["scores"])
    np.testing.assert_array_equal(old["heart_centre_mm"], new["heart_centre_mm"])
    brighter = new["registration"].astype(int) - old["registration"].astype(int)
    assert brighter.max() > 100  # the nodes' calcium, only in version 2
    assert (brighter != 0).mean() < 0.01  # and nothing else moved


def test_prepare_generator_3_makes_the_broad_variety(tmp_path: Path) -> None:
    """--generator 3 makes the samples of the broad variety: the same plan's case drawn with
    CaseOptions(variety=BROAD), not version 2's."""
    out = tmp_path / "3"
    assert prepare.main(["--out", str(out), "--n", "1", "--seed", "8", "--generator", "3"]) == 0
    sample = np.load(out / "sample_00000.npz")
    _, case_seed, category = case_plan(1, 8)[0]
    # The heart is drawn before the scan, so a small matrix gives the same heart.
    broad = generate_case(case_seed, category, CaseOptions(matrix=64, variety=BROAD))
    np.testing.assert_allclose(sample["heart_centre_mm"], prepare.heart_centre(broad.patient))
    standard = generate_case(case_seed, category, CaseOptions(matrix=64))
    assert not np.allclose(sample["heart_centre_mm"], prepare.heart_centre(standard.patient))


def test_shipped_files_have_cards_and_checked_hashes(tiny_models: Path, tmp_path: Path) -> None:
    manifest = json.loads((tiny_models / "calcium_manifest.json").read_text())
    assert set(manifest["sha256"]) == {
        "calcium_atlas.npz",
        "calcium_registration.pt",
        "calcium_score.pt",
    }
    for card in ("calcium_registration.md", "calcium_score.md"):
        text = (tiny_models / card).read_text()
        assert manifest["sha256"]["calcium_score.pt"] in text
    tampered = tmp_path / "weights"
    shutil.copytree(tiny_models, tampered)
    (tampered / "calcium_score.pt").write_bytes((tampered / "calcium_score.pt").read_bytes() + b"x")
    with pytest.raises(ModelFileError, match="sha256"):
        CalciumScorer(tampered)


def test_scoring_a_phantom_gives_a_complete_result(tiny_models: Path) -> None:
    case = generate_case(77, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    scorer = CalciumScorer(tiny_models, device="cpu")
    first, second = scorer.score(ct), scorer.score(ct)
    assert first.agatston_total == second.agatston_total, "deterministic"
    result = first.to_dict()
    for key in (
        "agatston_total",
        "agatston_per_artery",
        "category",
        "cacdrs",
        "flags",
        "registration",
    ):
        assert key in result
    assert set(result["agatston_per_artery"]) == {"LAD", "LCX", "RCA"}
    assert result["agatston_total"] == pytest.approx(
        sum(result["agatston_per_artery"].values()), abs=0.05
    )
    # The feedback lies on the scan's own grid and carries the score.
    total = first.feedback_total()
    assert total.GetSpacing() == ct.GetSpacing() and total.GetDirection() == ct.GetDirection()
    full = paste_into_scan(total, ct)
    assert full.GetSize() == ct.GetSize()
    assert float(sitk.GetArrayViewFromImage(full).sum()) == pytest.approx(
        first.agatston_total, rel=0.05
    )
    # A two-slice volume is flagged rather than scored silently.
    thin = ct[:, :, 40:42]
    assert "too_few_slices" in scorer.score(thin).flags
    assert first.contrast["enhanced"] is False and first.contrast["blood_pool_hu"] < 100


def test_the_contrast_gate_stops_a_contrast_phantom_before_the_score(tiny_models: Path) -> None:
    """The same phantom with its blood pool at 300 HU: located, assessed, never scored."""
    options = CaseOptions(protocol=(2.5, 2.5), n_slices=100, contrast_hu=300.0)
    case = generate_case(77, 2, options)
    result = CalciumScorer(tiny_models, device="cpu").score(case.grid.to_image(case.image))
    assert not result.scored and result.agatston_total is None and result.feedback == {}
    assert "contrast_enhanced" in result.flags and result.reported_category is None
    assert result.contrast["blood_pool_hu"] > 200
    assert result.to_dict()["category_name"] == "indeterminate"


def test_ctnode_score_reads_dicom_and_nifti_alike(tiny_models: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from models.phantoms.writer import write_case
    from node.cli import app

    case = generate_case(78, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=90))
    folder = write_case(case, tmp_path / "case", dicom=True)
    runner = CliRunner()
    outputs = {}
    for i, source in enumerate((folder / "dicom", folder / "image.nii.gz")):
        feedback = tmp_path / f"feedback_{i}.nii.gz"
        args = [
            "score",
            str(source),
            "--json",
            "--weights",
            str(tiny_models),
            "--feedback",
            str(feedback),
        ]
        run = runner.invoke(app, args)
        assert run.exit_code == 0, run.output
        outputs[source.name] = json.loads(run.output)
        written = sitk.ReadImage(str(feedback))
        assert written.GetSize() == case.grid.to_image(case.image).GetSize()
    dicom, nifti = outputs["dicom"], outputs["image.nii.gz"]
    for key in ("agatston_total", "agatston_per_artery", "category", "cacdrs", "flags"):
        assert dicom[key] == nifti[key], key
    assert dicom["method"] == "regression" and dicom["volume_mm3_total"] is None
    assert dicom["regression_total"] == dicom["agatston_total"]

    # --method exact: the exact figures, with the calcium volume and the regression beside.
    args = ["score", str(folder / "image.nii.gz"), "--json", "--weights", str(tiny_models)]
    run = runner.invoke(app, [*args, "--method", "exact"])
    assert run.exit_code == 0, run.output
    exact = json.loads(run.output)
    assert exact["method"] == "exact" and exact["volume_mm3_total"] is not None
    assert set(exact["volume_mm3_per_artery"]) == {"LAD", "LCX", "RCA"}
    assert exact["regression_total"] == nifti["agatston_total"]
    run = runner.invoke(app, [*args, "--method", "guess"])
    assert run.exit_code == 1 and "unknown scoring method" in run.output


def test_ctnode_score_explains_a_missing_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node.cli import app

    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16), str(volume))
    run = CliRunner().invoke(app, ["score", str(volume), "--weights", str(tmp_path / "none")])
    assert run.exit_code == 1
    assert "not installed" in run.output


def test_evaluation_reports_agreement_and_the_real_negative_control(
    tiny_models: Path, tmp_path: Path
) -> None:
    from tests.tools import require_real_data
    from training.calcium import evaluate

    real = require_real_data("lung_pet_ct_dx_A0001")
    weights = tmp_path / "weights"
    shutil.copytree(tiny_models, weights)
    args = ["--n", "2", "--seed", "424242", "--workers", "1", "--weights", str(weights)]
    assert evaluate.main([*args, "--real", str(real)]) == 0
    report = json.loads((weights / "calcium_evaluation.json").read_text())
    assert report["summary"]["n"] == 2 and len(report["cases"]) == 2
    assert set(report["per_artery_icc"]) == {"LAD", "LCX", "RCA"}
    # Both methods from one pass; the summary is the shipped method's (tiny: regression).
    assert report["method"] == "regression"
    assert set(report["methods"]) == {"exact", "regression"}
    assert report["summary"] == report["methods"]["regression"]["summary"]
    for case in report["cases"]:
        assert case["predicted"] == case["by_method"]["regression"]["total"]
        assert case["by_method"]["exact"]["total"] >= 0.0
    for series in report["real"]:
        assert series["method"] == "exact" and series["regression_total"] is not None
    assert sorted(r["series"] for r in report["real"]) == [
        "series_lung_kernel",
        "series_soft_kernel",
    ]
    for figure in ("calcium_scatter.png", "calcium_bland_altman.png", "calcium_scatter_exact.png"):
        assert (weights / figure).read_bytes()[:4] == b"\x89PNG"
    card = (weights / "calcium_score.md").read_text()
    assert "ICC(A,1) total" in card and "series_soft_kernel" in card
    assert "| | exact | regression (shipped) |" in card
    assert "Shipped: **regression**." in card


def test_evaluation_says_when_the_real_negative_control_is_missing(
    tiny_models: Path, tmp_path: Path, capsys
) -> None:
    from training.calcium import evaluate

    weights = tmp_path / "weights"
    shutil.copytree(tiny_models, weights)
    args = ["--n", "2", "--seed", "424242", "--workers", "1", "--weights", str(weights)]
    assert evaluate.main([*args, "--real", str(tmp_path / "absent")]) == 0
    assert "real negative control not found" in capsys.readouterr().err
    assert json.loads((weights / "calcium_evaluation.json").read_text())["real"] == []


def test_heart_search_eval_reports_both_locators(tiny_models: Path, tmp_path: Path) -> None:
    from training.calcium import heart_search_eval

    data = tiny_models.parent / "data"
    out = tmp_path / "heart_search.json"
    assert heart_search_eval.main(["--data", str(data), "--weights", str(tiny_models),
                                   "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["data"] == "3 samples of data"
    for setting in ("as_generated", "perturbed"):
        for locator in ("network", "network_and_search"):
            errors = report[setting][locator]
            assert 0 <= errors["median_mm"] <= errors["p95_mm"] <= errors["max_mm"]
            assert 0.0 <= errors["within_21_mm"] <= 1.0


def test_scorer_uses_the_heart_search_as_asked(tiny_models: Path) -> None:
    case = generate_case(11, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=60))
    ct = case.grid.to_image(case.image)
    plain = CalciumScorer(tiny_models, device="cpu").score(ct)  # the tiny manifest: off
    assert "heart_search_mm" not in plain.transform
    searched = CalciumScorer(tiny_models, device="cpu", heart_search=True).score(ct)
    shift = np.asarray(searched.transform["heart_search_mm"])
    assert np.all(np.abs(shift) <= 40.0)  # +-8 voxels of 5 mm
    # The shift is in the atlas frame; in the scan it is A shift (x_scan = A x_atlas + t).
    moved = np.asarray(searched.heart_centre_mm) - np.asarray(plain.heart_centre_mm)
    expected = np.asarray(searched.transform["matrix"]) @ shift
    assert np.allclose(moved, expected, atol=0.2), (moved, expected)


def test_presence_choice_reaches_the_manifest_and_the_card(tiny_models: Path, tmp_path) -> None:
    from training.calcium.select_presence import choose

    rows = [
        {
            "presence_threshold": None,
            "icc": 0.98,
            "weighted_kappa": 0.88,
            "category_accuracy": 0.8,
            "mae": 50.0,
        },
        {
            "presence_threshold": 0.3,
            "icc": 0.98,
            "weighted_kappa": 0.95,
            "category_accuracy": 0.9,
            "mae": 51.0,
        },
        {
            "presence_threshold": 0.5,
            "icc": 0.99,
            "weighted_kappa": 0.95,
            "category_accuracy": 0.9,
            "mae": 49.0,
        },
    ]
    assert choose(rows) == 0.5  # equal kappa: the higher ICC
    assert choose([{**rows[0], "weighted_kappa": 0.95, "icc": 0.99}, rows[2]]) is None  # tie: soft
    run = tmp_path / "score"
    shutil.copytree(tiny_models.parent / "score", run)
    selection = {"n_validation": 31, "rows": rows, "chosen": choose(rows)}
    (run / "presence_selection.json").write_text(json.dumps(selection))
    weights = tmp_path / "weights"
    reg = str(tiny_models.parent / "reg")
    assert ship.main(["--registration", reg, "--score", str(run), "--weights", str(weights)]) == 0
    manifest = json.loads((weights / "calcium_manifest.json").read_text())
    assert manifest["score"]["presence_threshold"] == 0.5
    card = (weights / "calcium_score.md").read_text()
    assert "Shipped: hard, at presence >= 0.5" in card
    assert "| hard, >= 0.3 | 0.9800 | 0.950 |" in card
    assert CalciumScorer(weights, device="cpu").score_net.presence_threshold == 0.5


def test_presence_is_chosen_on_an_independent_validation_folder(
    tiny_models: Path, tmp_path
) -> None:
    from training.calcium import select_presence

    run = tmp_path / "score"
    shutil.copytree(tiny_models.parent / "score", run)
    data = str(tiny_models.parent / "data")
    assert select_presence.main(["--data", data, "--score", str(run), "--validation", data]) == 0
    selection = json.loads((run / "presence_selection.json").read_text())
    assert selection["n_validation"] == 3  # every sample of the folder, not a 10 % split
    assert selection["validation"] == "all 3 samples of data"
    thresholds = [row["presence_threshold"] for row in selection["rows"]]
    assert thresholds == list(select_presence.THRESHOLDS)
    assert selection["chosen"] == select_presence.choose(selection["rows"])
    # Several folders (two seeds' validation sets, say) are scored as one set.
    assert (
        select_presence.main(["--data", data, "--score", str(run), "--validation", data, data]) == 0
    )
    twice = json.loads((run / "presence_selection.json").read_text())
    assert twice["n_validation"] == 6 and twice["validation"] == "all 6 samples of data, data"
    for once, doubled in zip(selection["rows"], twice["rows"], strict=True):
        assert doubled["mae"] == pytest.approx(once["mae"])  # the same cases, twice over


def test_a_continued_run_keeps_its_validation_split_by_split_seed(
    tiny_models: Path, tmp_path
) -> None:
    from training.calcium.data import split

    data = tiny_models.parent / "data"
    run = tmp_path / "continued"
    init = tiny_models.parent / "score" / "score.pt"
    args = ["--data", str(data), "--out", str(run), "--iterations", "1", "--batch", "1"]
    args += ["--device", "cpu", "--init", str(init), "--seed", "8", "--split-seed", "5"]
    assert train_score.main(args) == 0
    record = json.loads((run / "score_metrics.json").read_text())
    assert record["seed"] == 8 and record["split_seed"] == 5
    train_idx, val_idx = split(3, 0.1, 5)
    assert (record["samples_train"], record["samples_validation"]) == (len(train_idx), len(val_idx))

    assert record["appearance"] == 0.0  # off unless asked for

    # Several folders train together (version 2.4: generator-3 and generator-4 samples), here
    # with the appearance augmentation on (candidate 2.8).
    both = tmp_path / "both"
    args[1:2] = [str(data), str(data)]
    args[args.index("--out") + 1] = str(both)
    assert train_score.main([*args, "--appearance", "1.0"]) == 0
    record = json.loads((both / "score_metrics.json").read_text())
    assert record["samples_train"] + record["samples_validation"] == 6
    assert record["data"] == [str(data), str(data)]
    assert record["appearance"] == 1.0


def test_a_new_score_run_ships_beside_the_installed_registration(
    tiny_models: Path, tmp_path: Path
) -> None:
    """ship without --registration replaces the score network and keeps the rest as it was."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_models, weights)
    before = json.loads((weights / "calcium_manifest.json").read_text())
    run = tmp_path / "score"
    shutil.copytree(tiny_models.parent / "score", run)
    state = torch.load(run / "score.pt", weights_only=True)
    torch.save(
        {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, run / "score.pt"
    )
    metrics = json.loads((run / "score_metrics.json").read_text())  # a --init run, as recorded
    (run / "score_metrics.json").write_text(json.dumps({**metrics, "init": "RUN1/score.pt"}))
    assert ship.main(["--score", str(run), "--weights", str(weights), "--version", "1.1"]) == 0
    assert "| initialised from | RUN1/score.pt |" in (weights / "calcium_score.md").read_text()
    after = json.loads((weights / "calcium_manifest.json").read_text())
    assert (before["version"], after["version"]) == (ship.VERSION, "1.1")
    assert after["generator_version"] == "2"  # the default: what prepare makes by default
    assert after["registration"] == before["registration"]
    for kept in ("calcium_atlas.npz", "calcium_registration.pt"):
        assert after["sha256"][kept] == before["sha256"][kept]
    assert after["sha256"]["calcium_score.pt"] != before["sha256"]["calcium_score.pt"]
    CalciumScorer(weights, device="cpu")  # the new manifest's hashes match the files
    with pytest.raises(SystemExit):  # nothing installed to keep: --registration is needed
        ship.main(["--score", str(run), "--weights", str(tmp_path / "empty")])
    assert not (tmp_path / "empty").exists()  # refused before anything was written


def test_a_continued_registration_keeps_its_atlas_and_ships_beside_the_installed_score(
    tiny_models: Path, tmp_path: Path
) -> None:
    """train_registration --init --atlas --heart-weight continues a registration in the same
    atlas frame; ship without --score replaces it and keeps the score network and all its
    manifest records (threshold, region, method)."""
    reg = tiny_models.parent / "reg"
    run = tmp_path / "reg2"
    args = ["--data", str(tiny_models.parent / "data"), "--out", str(run), "--iterations", "2"]
    more = ["--init", str(reg / "registration.pt"), "--atlas", str(reg / "atlas.npz")]
    assert train_registration.main([*args, *more, "--heart-weight", "0.5", "--batch", "2"]) == 0
    with np.load(reg / "atlas.npz") as old, np.load(run / "atlas.npz") as new:
        np.testing.assert_array_equal(old["volume"], new["volume"])
        np.testing.assert_array_equal(old["heart"], new["heart"])
    record = json.loads((run / "registration_metrics.json").read_text())
    assert record["heart_weight"] == 0.5 and record["init"].endswith("registration.pt")
    first = torch.load(reg / "registration.pt", weights_only=True)
    second = torch.load(run / "registration.pt", weights_only=True)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # it trained

    weights = tmp_path / "weights"
    shutil.copytree(tiny_models, weights)
    before = json.loads((weights / "calcium_manifest.json").read_text())
    ship_args = ["--registration", str(run), "--weights", str(weights), "--heart-search"]
    assert ship.main([*ship_args, "--heart-search-radius", "15", "--version", "1.2"]) == 0
    after = json.loads((weights / "calcium_manifest.json").read_text())
    assert after["score"] == before["score"]
    assert after["registration"]["heart_weight"] == 0.5 and after["registration"]["heart_search"]
    assert after["sha256"]["calcium_score.pt"] == before["sha256"]["calcium_score.pt"]
    assert after["sha256"]["calcium_atlas.npz"] == before["sha256"]["calcium_atlas.npz"]
    assert after["sha256"]["calcium_registration.pt"] != before["sha256"]["calcium_registration.pt"]
    scorer = CalciumScorer(weights, device="cpu")  # the new manifest's hashes match the files
    assert scorer.heart_search.radius == 3  # 15 mm on the 5 mm grid
    card = (weights / "calcium_registration.md").read_text()
    assert "0.5 x a Huber loss" in card and "+-15 mm per axis" in card
    with pytest.raises(SystemExit):  # neither network given
        ship.main(["--weights", str(weights)])


def test_heart_loss_is_quadratic_within_a_centimetre_and_linear_beyond() -> None:
    errors = torch.tensor([0.0, 5.0, 10.0, 30.0])
    loss = train_registration.heart_loss(errors)
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.125, 0.5, 2.5], rtol=1e-6)


def test_coronary_region_is_chosen_shipped_and_limits_what_counts(
    tiny_models: Path, tmp_path: Path
) -> None:
    """coronary_extent writes the region into the run, ship puts it into the manifest, and the
    scorer counts only inside it: what it leaves out is reported, and adds back to the score
    of the same weights without a region."""
    from training.calcium import coronary_extent

    run = tmp_path / "score"
    shutil.copytree(tiny_models.parent / "score", run)
    data = str(tiny_models.parent / "data")
    args = ["--data", data, "--score", str(run), "--weights", str(tiny_models)]
    assert coronary_extent.main([*args, "--margin-mm", "10"]) == 0
    report = json.loads((run / "coronary_region.json").read_text())
    for bound, lesion, sign in (("low_mm", "lesion_low_mm", -1), ("high_mm", "lesion_high_mm", 1)):
        assert np.allclose(report[bound], np.asarray(report[lesion]) + sign * 10.0, atol=0.011)
    assert 0.0 <= report["truth_outside_fraction"] <= 1.0

    # A small region, so that this barely trained network's map is cut.
    box = {"low": [-30.0, -30.0, -20.0], "high": [30.0, 30.0, 20.0]}
    report["low_mm"], report["high_mm"] = box["low"], box["high"]
    (run / "coronary_region.json").write_text(json.dumps(report))
    weights = tmp_path / "weights"
    reg = ["--registration", str(tiny_models.parent / "reg")]
    assert ship.main([*reg, "--score", str(run), "--weights", str(weights), "--heart-search"]) == 0
    manifest = json.loads((weights / "calcium_manifest.json").read_text())
    assert manifest["score"]["coronary_region_mm"] == box
    assert manifest["registration"]["heart_search"] is True
    assert "coronary region" in (weights / "calcium_score.md").read_text().lower()

    case = generate_case(77, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    gated = CalciumScorer(weights, device="cpu").score(ct)
    plain = CalciumScorer(tiny_models, device="cpu", heart_search=True).score(ct)
    assert plain.outside_region_au == 0.0 and plain.agatston_total > 0
    assert gated.outside_region_au > 0
    assert gated.agatston_total + gated.outside_region_au == pytest.approx(
        plain.agatston_total, rel=1e-4, abs=1e-3
    )
    assert gated.to_dict()["outside_region_au"] == round(gated.outside_region_au, 2)
    # The feedback is cut the same way: nothing farther from the heart than the region.
    total = gated.feedback_total()
    assert total is not None, "what the region keeps carries feedback"
    zyx = np.argwhere(sitk.GetArrayFromImage(total) > 1e-6)
    assert len(zyx)
    points = np.array([total.TransformIndexToPhysicalPoint([int(v) for v in p[::-1]]) for p in zyx])
    offsets = points - np.asarray(gated.heart_centre_mm)  # x, y, z
    # Linear resampling reaches at most one score voxel beyond the region.
    assert np.all(np.abs(offsets) <= np.array([30.0, 30.0, 20.0]) + 3.5)


# --- the exact method --------------------------------------------------------------------


def _presence_at_candidates(scorer: CalciumScorer, ct: sitk.Image):
    """The tiny network's presence, read at every candidate voxel of the whole scan by this
    test's own geometry (nearest score cell, inside the box): (z, y, x) indices (N, 3), the
    presence (N, 3), and the scan array."""
    from models.calcium.preprocess import score_grid

    centre, _, _ = scorer.locate_heart(ct)
    _, presence = scorer.score_network(ct, centre)
    hu = sitk.GetArrayFromImage(ct)
    zyx = np.argwhere(hu >= 130)
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    world = np.asarray(ct.GetOrigin()) + (zyx[:, ::-1] * ct.GetSpacing()) @ direction.T
    ref = score_grid(centre, presence.shape[1:][::-1])
    cell = np.rint((world - ref.GetOrigin()) / ref.GetSpacing()).astype(int)  # x, y, z
    inside = np.all((cell >= 0) & (cell < presence.shape[1:][::-1]), axis=1)
    zyx, cell = zyx[inside], cell[inside]
    return zyx, presence[:, cell[:, 2], cell[:, 1], cell[:, 0]].T, hu


def test_exact_total_is_the_definition_on_the_candidates_the_network_labels(
    tiny_models: Path,
) -> None:
    """The exact method's score is models.agatston on the scan's own voxels, labelled by the
    network's presence (highest artery, at or above the threshold) and nothing else."""
    from models.agatston import agatston
    from models.labels import Label

    case = generate_case(77, 2, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    scorer = CalciumScorer(tiny_models, device="cpu", method="exact")
    zyx, presence, hu = _presence_at_candidates(scorer, ct)
    # Two training steps leave presence near its initial sigmoid(-4): a threshold among the
    # candidates' own values labels some of them and leaves the rest out.
    scorer.exact_threshold = float(np.quantile(presence.max(axis=1), 0.5))
    labels = np.zeros(hu.shape, np.uint8)
    chosen = presence.max(axis=1) >= scorer.exact_threshold
    codes = np.array([Label.CAC_LAD, Label.CAC_LCX, Label.CAC_RCA], np.uint8)
    labels[tuple(zyx[chosen].T)] = codes[presence[chosen].argmax(axis=1)]
    expected = agatston(hu, labels, case.spacing_zyx)
    assert expected.total > 0, "the threshold labels counted calcium"

    result = scorer.score(ct)
    assert result.method == "exact"
    assert result.agatston_total == pytest.approx(expected.total, rel=1e-9)
    assert result.agatston_per_artery == pytest.approx(expected.per_artery, rel=1e-9)
    assert result.volume_mm3_total == pytest.approx(expected.volume_mm3, rel=1e-9)
    assert result.volume_mm3_per_artery == pytest.approx(expected.volume_per_artery_mm3)
    # The direct regression comes from the same pass: the regression method's own figures.
    regression = CalciumScorer(tiny_models, device="cpu").score(ct)  # tiny manifest: regression
    assert regression.method == "regression" and regression.volume_mm3_total is None
    assert result.regression_total == pytest.approx(regression.agatston_total, rel=1e-6)
    assert regression.regression_total == regression.agatston_total
    shown = result.to_dict()
    assert shown["method"] == "exact"
    assert shown["volume_mm3_total"] == round(expected.volume_mm3, 2)
    assert set(shown["regression_per_artery"]) == {"LAD", "LCX", "RCA"}


def test_exact_feedback_is_the_counted_voxels_and_sums_to_the_definition(
    tiny_models: Path,
) -> None:
    """An exact result's feedback holds each counted voxel's contribution: its voxels, scored
    by the definition per artery, give the result's per-artery scores."""
    from models.agatston import agatston
    from models.labels import Label
    from node.results.regions import feedback_regions

    case = generate_case(78, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=90))
    ct = case.grid.to_image(case.image)
    scorer = CalciumScorer(tiny_models, device="cpu", method="exact")
    scorer.exact_threshold = 0.0  # every candidate goes to its most present artery
    result = scorer.score(ct)
    assert result.agatston_total > 0 and set(result.feedback) == {"LAD", "LCX", "RCA"}
    labels = np.zeros(ct.GetSize()[::-1], np.uint8)
    regions = feedback_regions(result, ct)
    for artery, code in zip(
        ("LAD", "LCX", "RCA"), (Label.CAC_LAD, Label.CAC_LCX, Label.CAC_RCA), strict=True
    ):
        part = result.feedback[artery]
        assert part.GetSpacing() == ct.GetSpacing() and part.GetDirection() == ct.GetDirection()
        pasted = sitk.GetArrayFromImage(paste_into_scan(part, ct))
        assert float(pasted.sum()) == pytest.approx(result.agatston_per_artery[artery], rel=1e-5)
        assert np.array_equal(regions[artery], pasted > 0)  # the SEG/overlay regions
        labels[pasted > 0] = code
    definition = agatston(sitk.GetArrayFromImage(ct), labels, case.spacing_zyx)
    assert definition.per_artery == pytest.approx(result.agatston_per_artery, rel=1e-9)


def test_exact_threshold_is_chosen_on_its_own_phantoms_and_installed(
    tiny_models: Path, tmp_path: Path
) -> None:
    from training.calcium import select_exact

    weights = tmp_path / "weights"
    shutil.copytree(tiny_models, weights)
    out = tmp_path / "selection.json"
    # The plan's two cases made by each of two generator versions: chosen on all four.
    args = ["--n", "2", "--generator", "2", "4", "--workers", "1", "--weights", str(weights)]
    assert select_exact.main([*args, "--out", str(out)]) == 0
    manifest = json.loads((weights / "calcium_manifest.json").read_text())
    exact = manifest["score"]["exact"]
    selection = exact["selection"]
    assert [r["presence_threshold"] for r in selection["rows"]] == list(select_exact.THRESHOLDS)
    assert exact["presence_threshold"] == select_exact.choose(selection["rows"])
    assert selection["validation"].startswith(
        "4 phantoms of seed 5252 (case_plan) made by generator versions 2 and 4"
    )
    cases = json.loads(out.read_text())["cases"]
    assert [(c["generator"], c["index"]) for c in cases] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    # The same plan entries, another generator's anatomy and lesions: other truths.
    assert [c["truth"] for c in cases[:2]] != [c["truth"] for c in cases[2:]]
    assert (
        manifest["sha256"]
        == json.loads((tiny_models / "calcium_manifest.json").read_text())["sha256"]
    )
    card = " ".join((weights / "calcium_score.md").read_text().split())  # lines wrapped
    assert f"Shipped: presence >= {exact['presence_threshold']}." in card
    assert CalciumScorer(weights, method="exact").exact_threshold == exact["presence_threshold"]
    rows = [{"presence_threshold": t, "icc": 0.9, "weighted_kappa": 0.8} for t in (0.3, 0.7)]
    assert select_exact.choose(rows) == 0.3  # a tie: nearer 0.5 (both 0.2 away: the first)
    rows[1]["icc"] = 0.95
    assert select_exact.choose(rows) == 0.7


def test_unknown_scoring_method_is_refused(tiny_models: Path) -> None:
    with pytest.raises(ValueError, match="unknown scoring method"):
        CalciumScorer(tiny_models, device="cpu", method="magic")
