"""training.calcium.evaluate_styles: a model reported on both phantom styles, on cardiac
field-of-view crops, on contrast-enhanced cases and on the real controls, with the shipped
model (or the tiny one tests/tools.py trains where none is shipped) on a handful of cases."""

from __future__ import annotations

import json
from pathlib import Path

from models.agatston import risk_category
from training.calcium import evaluate_styles
from training.calcium.evaluate_styles import (
    OUTSIDE,
    markdown,
    scored_methods,
    summarise,
    supports_method,
)


def test_both_styles_fov_contrast_and_real_controls_are_reported(weights: Path, tmp_path) -> None:
    from tests.tools import require_real_data

    real = require_real_data("lung_pet_ct_dx_A0001").parent
    out = tmp_path / "styles"
    args = ["--styles", "own,alt", "--n-own", "2", "--n-alt", "2", "--alt-matrix", "128",
            "--fov", "--n-contrast", "1", "--real", "--real-root", str(real),
            "--weights", str(weights), "--workers", "1", "--out", str(out)]  # fmt: skip
    assert evaluate_styles.main(args) == 0
    result = json.loads((out / "styles.json").read_text())
    methods = scored_methods("both")
    assert result["methods"] == methods
    report = result["report"]
    for name in ("own", "alt", "fov_crop"):
        for method in methods:
            entry = report[name][method]
            assert entry["n"] == 2
            scored = entry["n"] - entry["refused"] - entry["indeterminate"]
            assert ("summary" in entry) == (scored >= 2)
    fov = report["fov_agreement"][methods[0]]
    # Pairs whose full scan is indeterminate (e.g. a noisy sharp kernel) are counted apart.
    assert fov["n"] + fov["full_scan_indeterminate"] == 2
    if fov["n"]:
        assert 0.0 <= fov["same_category_as_full_scan"] <= 1.0
        assert fov["crops_whose_truth_differs"] == 0  # the crop keeps every lesion
    assert report["contrast"][methods[0]]["n"] == 1
    assert sorted(r["series"] for r in result["real"]) == [
        "lung_pet_ct_dx_A0001/series_lung_kernel",
        "lung_pet_ct_dx_A0001/series_soft_kernel",
        "pulmonary_report/ct_cropped.nii.gz",
    ]
    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert sorted(r["set"] for r in rows) == sorted(
        ["own"] * 2 + ["alt"] * 2 + ["fov_crop"] * 2 + ["contrast"]
    )
    table = (out / "styles.md").read_text()
    assert "| own style (models.phantoms, seed 424242) |" in table
    assert "Cardiac FOV crops" in table and "series_soft_kernel" in table
    # The report can be rebuilt from the rows alone (a run cut short).
    assert evaluate_styles.main([*args, "--report-only"]) == 0
    assert json.loads((out / "styles.json").read_text())["report"] == report


def test_untrusted_results_are_indeterminate_and_left_out_of_the_agreement() -> None:
    def row(truth, total, category, flags=()):
        score = {"total": total, "per_artery": {"LAD": total, "LCX": 0.0, "RCA": 0.0},
                 "category": category, "flags": list(flags)}  # fmt: skip
        return {"set": "alt", "index": 0, "truth": truth,
                "truth_per_artery": {"LAD": truth, "LCX": 0.0, "RCA": 0.0},
                "scores": {"exact": score}}  # fmt: skip

    rows = [row(0, 0, 0), row(50, 48, 2), row(500, 450, 4),
            row(300, 5, None, ["heart_outside_field_of_view"])]  # fmt: skip
    entry = summarise(rows, ["exact"])["alt"]["exact"]
    assert entry["indeterminate"] == 1 and entry["summary"]["n"] == 3
    assert entry["summary"]["category_accuracy"] == 1.0
    assert entry["flag_counts"] == {"heart_outside_field_of_view": 1}
    # Flags aside, every measured number: the withheld 5 AU against 300 is in, and wrong.
    measured = entry["all_measured"]
    assert measured["n"] == 4 and measured["summary"]["category_accuracy"] == 0.75
    assert measured["per_artery_icc"]["LAD"] < entry["per_artery_icc"]["LAD"]
    table = markdown({"alt": {"exact": entry}}, [], ["exact"], "# test")
    assert "| second style (phantoms_alt, DICOM) | exact | 4 | " in table
    assert "Every measured number" not in markdown({}, [], ["exact"], "# nothing measured")


def test_a_measured_category_under_an_untrusted_flag_is_not_shown() -> None:
    """Rows keep the measured category of an untrusted result (as CalciumResult does); the
    report judges them by their flags: indeterminate, out of the agreement, and a crop shown
    indeterminate does not agree with its full scan."""

    def row(name, truth, total, flags=()):
        score = {"total": total, "per_artery": {"LAD": total, "LCX": 0.0, "RCA": 0.0},
                 "category": risk_category(total), "flags": list(flags)}  # fmt: skip
        return {"set": name, "index": int(truth), "truth": truth,
                "truth_per_artery": {"LAD": truth, "LCX": 0.0, "RCA": 0.0},
                "scores": {"exact": score}}  # fmt: skip

    noisy = ["excess_image_noise"]
    rows = [row("alt", 0, 0), row("alt", 50, 48), row("alt", 500, 450), row("alt", 7, 300, noisy),
            row("fov_crop", 0, 0), row("fov_crop", 50, 48, [OUTSIDE]), row("fov_crop", 500, 450),
            row("fov_crop", 7, 300, noisy)]  # fmt: skip
    report = summarise(rows, ["exact"])
    entry = report["alt"]["exact"]
    assert entry["indeterminate"] == 1 and entry["summary"]["n"] == 3
    assert entry["summary"]["category_accuracy"] == 1.0
    fov = report["fov_agreement"]["exact"]
    assert fov["n"] == 3 and fov["full_scan_indeterminate"] == 1
    assert fov["same_category_as_full_scan"] == 2 / 3  # the flagged crop does not agree


def test_a_scorer_without_methods_is_reported_as_the_direct_regression() -> None:
    if supports_method():
        assert scored_methods("both") == ["exact", "regression"]
        assert scored_methods("exact") == ["exact"]
    else:
        assert scored_methods("both") == scored_methods("exact") == ["regression"]
