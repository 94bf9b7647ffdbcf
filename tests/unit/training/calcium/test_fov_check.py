"""training/calcium/fov_check.py: which results its rules withhold, and what it chooses."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from training.calcium.fov_check import CUT, WHOLE, Rules, crop, errors, report


def _row(region: float, atlas: float, heart: float, flags=(), category: int = 2) -> dict:
    return {"coronary_region": region, "score_box": region - 0.2, "atlas_correlation": atlas,
            "heart_correlation": heart, "flags": list(flags), "category": category}  # fmt: skip


def _case(whole_region: float, small_atlas: float, small_heart: float) -> dict:
    rows = {name: _row(whole_region, 0.8, 0.8) for name in WHOLE}
    rows["cardiac_160"] = _row(whole_region, small_atlas, small_heart)
    rows.update({name: _row(0.45, 0.8, 0.8) for name in CUT})  # only the region tells
    return {"rows": rows}


def test_rules_withhold_a_cut_heart_a_failed_registration_and_contrast() -> None:
    rules = Rules("coronary_region", 0.7, 0.35)
    assert not rules.indeterminate(_row(0.9, 0.8, 0.1))
    assert rules.indeterminate(_row(0.6, 0.8, 0.9))  # cut
    assert not rules.indeterminate(_row(0.9, 0.4, 0.5))  # the heart search vouches
    assert rules.indeterminate(_row(0.9, 0.4, 0.3))
    assert rules.indeterminate(_row(0.9, 0.8, 0.9, ["registration_failure"]))  # at its limits
    assert rules.indeterminate(_row(0.9, 0.8, 0.9, ["contrast_enhanced"]))
    assert not rules.indeterminate(_row(0.9, 0.8, 0.9, ["heart_outside_field_of_view"]))
    assert Rules("coronary_region", 0.7, None).indeterminate(_row(0.9, 0.4, 0.9))  # as 2.2


def test_report_chooses_the_rules_with_the_fewest_wrong_decisions() -> None:
    cases = [_case(0.8, 0.4, 0.5), _case(0.73, 0.45, 0.6)]
    summary = report(cases)
    # From 0.5 every cut heart (0.45 inside) is caught, from 0.75 a whole heart (0.73) is
    # withheld: ties between 0.5 and 0.7 go to the lowest.
    assert summary["chosen"] == {"measure": "coronary_region", "min_inside": 0.5,
                                 "min_heart_ncc": 0.5}  # fmt: skip
    # Every correlation up to 0.5 lets both small fields of view through: the highest is kept.
    chosen = errors(cases, Rules("coronary_region", 0.5, 0.5))
    assert chosen["wrong"] == 0 and chosen["cut_shown"] == 0
    assert summary["rules_chosen"]["wrong"] == 0
    assert summary["agreement_chosen"]["cardiac_160"]["same_and_shown"] == 1.0
    assert summary["agreement_2_2"]["cardiac_160"]["same_and_shown"] == 0.0


def test_crop_keeps_the_window_width_at_the_scan_edge() -> None:
    image = sitk.GetImageFromArray(np.zeros((20, 100, 100), np.int16))
    image.SetSpacing((2.0, 2.0, 5.0))
    # A 100 mm window (51 voxel centres at 2 mm, both edges included) past the left edge.
    inside = crop(image, [-50, 20, 10], [50, 120, 60])
    assert inside.GetSize()[:2] == (51, 51)
    assert inside.GetOrigin()[0] == pytest.approx(0.0)
    cut = crop(image, [-50, 20, 10], [50, 120, 60], keep_width=False)
    assert cut.GetSize()[0] == 26 and cut.GetSize()[2] == 11


def test_report_chooses_the_coronary_core_where_only_it_tells_cut_from_whole() -> None:
    from models.calcium.inference import HEART_CUT_RULE

    cases = [_case(0.8, 0.8, 0.8), _case(0.66, 0.8, 0.8)]  # a small field of view: region 0.66
    for case in cases:
        for name, row in case["rows"].items():
            row["coronary_core"] = 0.5 if name in CUT else 0.95
    summary = report(cases)
    # Both measures tell every cut heart (region 0.45, core 0.5) from every whole one (region
    # 0.66 and more, core 0.95); a tie goes to the shipped measure, at its lowest threshold.
    shipped = HEART_CUT_RULE[0]
    assert summary["chosen"]["measure"] == shipped
    assert summary["chosen"]["min_inside"] == (0.5 if shipped == "coronary_region" else 0.55)
    # Now a cut heart whose region looks whole (0.8): only the core tells.
    for case in cases:
        case["rows"]["cut_side"]["coronary_region"] = 0.8
    summary = report(cases)
    assert summary["chosen"]["measure"] == "coronary_core"
    assert summary["rules_chosen"]["wrong"] == 0
    assert errors(cases, Rules("coronary_region", 0.7, 0.35))["cut_shown"] == 2
    assert set(summary["agreement_shipped"]) == set(summary["agreement_chosen"])
