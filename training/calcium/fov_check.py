"""Choose the field-of-view rules of the calcium scorer on own-style crops, and measure the
cardiac-field-of-view agreement (issue 25 item 2).

python -m training.calcium.fov_check [--n 100] [--seed 6464] [--workers 2] [--weights DIR]
                                     [--out training/calcium/results/fov_check] [--report-only]

Each phantom (generator 2; seed 6565 chose the rules shipped with 2.4 and seed 6464 reports
them, both used for nothing else; training 1001, soft presence
5151, exact threshold 5252, held-out 424242) is scored as a whole chest scan and as six crops
of the same voxels:

- cardiac: a dedicated calcium-scoring reconstruction: a 220 mm field of view centred on the
  heart (+-8 mm), from 5-35 mm above the heart (about the carina) to 10-20 mm below it;
- cardiac_190, cardiac_160: the same at 190 and 160 mm across (heart whole in all three);
- cut_below / cut_above: the 220 mm field of view ending (starting) at the heart's middle;
- cut_side: the 220 mm window moved sideways so that the heart's centre lies on its edge
  (cut there even at the scan's edge).

Per crop it records the score, the flags, the fraction of the score box and of the coronary
region (around the located heart) inside the scan, the registration's whole-grid correlation
with the atlas, the heart search's correlation, and the located centre's distance from the
true heart centre. From these it recomputes, under candidate rules, which results would be
indeterminate, and chooses (Rules, report), together: the coverage measure (the coronary
region, or the coronary extent within it) and the fraction under which
`heart_outside_field_of_view` is raised, and the heart-search correlation that lets a low
whole-grid correlation pass without `registration_failure`; with the fewest wrong decisions
(whole hearts made indeterminate plus cut hearts left with no untrusted flag). Until
2026-12-05 the two were chosen one after the other, the cut rule under 2.2's registration
rule, which let that rule's failures on small fields of view decide the cut rule.
Version 2.2's rules are reported beside them, with the agreement issue 25 asks for: a
whole-heart crop in the full scan's category (target >= 95 %), an indeterminate one counted
as a disagreement.

Writes OUT/cases.jsonl and OUT/fov_check.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.agatston import risk_category
from models.calcium.inference import (
    HEART_CUT_RULE,
    MIN_BOX_INSIDE,
    MIN_HEART_NCC,
    MIN_NCC,
    REGION_CUT_RULE,
    WEIGHTS_DIR,
    CalciumScorer,
)
from models.calcium.result import UNTRUSTED_FLAGS
from models.phantoms.case import generate_case
from models.phantoms.plan import case_plan
from training.calcium.prepare import heart_centre

SEED = 6464
CARDIAC_FOV_MM = 220.0
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SMALL_FOVS_MM = (160.0, 190.0)
WHOLE = ("full", "cardiac", *(f"cardiac_{fov:.0f}" for fov in SMALL_FOVS_MM))
CUT = ("cut_below", "cut_above", "cut_side")
OUTSIDE = "heart_outside_field_of_view"
REGISTRATION = "registration_failure"
CUT_MEASURES = ("coronary_region", "coronary_core")  # the shipped measure decides a tie
HEART_NCC = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)

_scorer: CalciumScorer | None = None


def _init(weights: str) -> None:
    global _scorer  # one model per worker process, loaded once
    import torch

    torch.set_num_threads(1)
    _scorer = CalciumScorer(Path(weights), device="cpu")


def crop(ct: sitk.Image, low_mm, high_mm, keep_width: bool = True) -> sitk.Image:
    """The voxels of `ct` inside the physical box [low, high] (x y z mm). With keep_width the
    in-plane window keeps its full size at the scan's edge (moved inwards), as a
    reconstruction's field of view would."""
    corners = [
        ct.TransformPhysicalPointToContinuousIndex((x, y, z))
        for x in (low_mm[0], high_mm[0])
        for y in (low_mm[1], high_mm[1])
        for z in (low_mm[2], high_mm[2])
    ]
    corners = np.asarray(corners)
    size = np.asarray(ct.GetSize())
    start = np.ceil(corners.min(axis=0)).astype(int)
    stop = np.floor(corners.max(axis=0)).astype(int) + 1
    for axis in (0, 1) if keep_width else ():
        count = min(stop[axis] - start[axis], size[axis])
        start[axis] = int(np.clip(start[axis], 0, size[axis] - count))
        stop[axis] = start[axis] + count
    start, stop = np.maximum(start, 0), np.minimum(stop, size)
    return ct[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]


def variants(case, ct: sitk.Image, rng: np.random.Generator) -> dict[str, sitk.Image]:
    low, high = (np.asarray(b, dtype=float) for b in case.patient["heart_bounds_mm"])
    centre = np.asarray(case.patient["heart_centre_mm"], dtype=float)
    middle_z = 0.5 * (low[2] + high[2])
    xy = centre[:2] + rng.uniform(-8, 8, 2)
    half = CARDIAC_FOV_MM / 2
    top, bottom = high[2] + rng.uniform(5, 35), low[2] - rng.uniform(10, 20)

    def window(xy_centre, z_low, z_high):
        return crop(ct, [*(xy_centre - half), z_low], [*(xy_centre + half), z_high])

    side = np.array([1.0, 0.0]) * half * (1 if rng.random() < 0.5 else -1)
    small = {  # smaller cardiac fields of view, same centre and range
        f"cardiac_{fov:.0f}": crop(ct, [*(xy - fov / 2), bottom], [*(xy + fov / 2), top])
        for fov in SMALL_FOVS_MM
    }
    return {
        "cardiac": window(xy, bottom, top),
        **small,
        "cut_below": window(xy, middle_z, top),
        "cut_above": window(xy, bottom, middle_z),
        "cut_side": crop(
            ct, [*(centre[:2] + side - half), bottom], [*(centre[:2] + side + half), top], False
        ),
    }


def _score(ct: sitk.Image, true_centre: np.ndarray) -> dict:
    result = _scorer.score(ct)
    centre = np.asarray(result.heart_centre_mm)
    return {
        "centre_error_mm": float(np.linalg.norm(centre - true_centre)),
        "atlas_correlation": result.transform.get("atlas_correlation"),
        "heart_correlation": result.transform.get("heart_correlation"),
        "total": result.agatston_total,
        "category": None if result.agatston_total is None else risk_category(result.agatston_total),
        "flags": list(result.flags),
        **_scorer.coverage(ct, centre),
        "size": list(ct.GetSize()),
    }


def _job(job: tuple[int, int, int]) -> dict:
    index, seed, category = job
    case = generate_case(seed, category)
    ct = case.grid.to_image(case.image)
    rng = np.random.default_rng([seed, 6464])
    true_centre = heart_centre(case.patient)
    rows = {"full": _score(ct, true_centre)}
    rows.update(
        {name: _score(image, true_centre) for name, image in variants(case, ct, rng).items()}
    )
    return {"index": index, "seed": seed, "truth": case.truth.total, "rows": rows}


class Rules:
    """The two rules chosen here, as the scorer applies them: the heart is cut when the
    `measure` ("coronary_region", "coronary_core", or 2.2's "score_box") lies less than
    `inside` in the scan;
    the registration failed when it hit its limits, or its whole-grid correlation is under
    MIN_NCC and the heart search's local correlation (heart_ncc; None: not consulted, as in
    2.2) does not vouch for it."""

    def __init__(self, measure: str, inside: float, heart_ncc: float | None) -> None:
        self.measure, self.inside, self.heart_ncc = measure, inside, heart_ncc

    def cut(self, row: dict) -> bool:
        return row[self.measure] < self.inside

    def registration_failed(self, row: dict) -> bool:
        ncc, heart = row["atlas_correlation"], row["heart_correlation"]
        if ncc >= MIN_NCC:  # flagged all the same: the transform was at its limits
            return REGISTRATION in row["flags"]
        return self.heart_ncc is None or heart is None or heart < self.heart_ncc

    def indeterminate(self, row: dict) -> bool:
        """Any untrusted flag: the category is withheld."""
        other = any(f in UNTRUSTED_FLAGS and f not in (OUTSIDE, REGISTRATION) for f in row["flags"])
        return self.cut(row) or self.registration_failed(row) or other

    def describe(self) -> str:
        heart = "" if self.heart_ncc is None else f", heart correlation >= {self.heart_ncc}"
        return f"{self.measure} < {self.inside}{heart}"


def errors(cases: list[dict], rules: Rules) -> dict:
    """Per variant, how many results the rules make indeterminate, and the wrong decisions:
    whole hearts indeterminate plus cut hearts shown (no untrusted flag at all)."""
    names = [name for name in WHOLE + CUT if all(name in c["rows"] for c in cases)]
    withheld = {n: sum(rules.indeterminate(c["rows"][n]) for c in cases) for n in names}
    cut_shown = sum(len(cases) - withheld[n] for n in CUT)
    whole_withheld = sum(withheld[n] for n in WHOLE if n in withheld)
    return {"rules": rules.describe(), "measure": rules.measure, "inside": rules.inside,
            "heart_ncc": rules.heart_ncc, "indeterminate": withheld, "cut_shown": cut_shown,
            "wrong": whole_withheld + cut_shown}  # fmt: skip


def agreement(cases: list[dict], rules: Rules) -> dict:
    """Per whole-heart crop, against the full scan: the same category, and the same category
    with neither indeterminate (a withheld category counts as a disagreement)."""
    out = {}
    for name in WHOLE[1:]:
        if not all(name in c["rows"] for c in cases):
            continue
        same = shown_same = 0
        for c in cases:
            full, crop_row = c["rows"]["full"], c["rows"][name]
            equal = crop_row["category"] == full["category"]
            same += equal
            shown_same += equal and not (rules.indeterminate(full) or rules.indeterminate(crop_row))
        out[name] = {"same_category": same / len(cases), "same_and_shown": shown_same / len(cases)}
    return out


def report(cases: list[dict]) -> dict:
    """The cut rule (a coverage measure and its threshold) and the registration rule (the heart
    search's correlation) chosen together, with the fewest wrong decisions; ties: the shipped
    measure, the lowest threshold (flag only what is clearly cut), the highest heart
    correlation (trust least). The tables show each cut rule with 2.2's registration rule, and
    each registration rule with the chosen cut rule; the shipped rules
    (models/calcium/inference.py) are reported beside them."""
    measures = [m for m in CUT_MEASURES if all(m in c["rows"]["full"] for c in cases)]
    shipped_measure, shipped_inside = HEART_CUT_RULE
    joint = [errors(cases, Rules(m, t, h))
             for m in measures for t in THRESHOLDS for h in (None, *HEART_NCC)]  # fmt: skip
    best = min(joint, key=lambda r: (r["wrong"], r["measure"] != shipped_measure, r["inside"],
                                     -(r["heart_ncc"] or 0.0)))  # fmt: skip
    measure, inside, heart = best["measure"], best["inside"], best["heart_ncc"]
    region = [errors(cases, Rules(m, t, None)) for m in measures for t in THRESHOLDS]
    trust = [errors(cases, Rules(measure, inside, h)) for h in (None, *HEART_NCC)]
    old, new = Rules("score_box", MIN_BOX_INSIDE, None), Rules(measure, inside, heart)
    if shipped_measure not in measures:  # cases recorded before the measure existed
        shipped_measure, shipped_inside = REGION_CUT_RULE
    shipped = Rules(shipped_measure, shipped_inside, MIN_HEART_NCC)
    return {
        "n": len(cases),
        "region_rules": region,
        "registration_rules": trust,
        "chosen": {"measure": measure, "min_inside": inside, "min_heart_ncc": heart},
        "rules_2_2": errors(cases, old),
        "rules_chosen": errors(cases, new),
        "rules_shipped": errors(cases, shipped),
        "agreement_2_2": agreement(cases, old),
        "agreement_chosen": agreement(cases, new),
        "agreement_shipped": agreement(cases, shipped),
    }


def markdown(summary: dict, seed: int) -> str:
    n = summary["n"]
    names = list(summary["rules_chosen"]["indeterminate"])
    head = ["| rules | " + " | ".join(names) + " | cut hearts shown | wrong |",
            "|---" * (len(names) + 3) + "|"]  # fmt: skip

    def table(rows: list[dict]) -> list[str]:
        return head + [
            f"| {r['rules']} | " + " | ".join(str(r["indeterminate"][k]) for k in names)
            + f" | {r['cut_shown']} | {r['wrong']} |"
            for r in rows
        ]  # fmt: skip

    chosen = summary["chosen"]
    lines = [
        f"# Field-of-view rules on {n} own-style phantoms (seed {seed}) and their crops",
        "",
        "Results made indeterminate (any untrusted flag) per variant; whole hearts: full, "
        "cardiac*; cut hearts: cut_*. cut hearts shown: cut crops with no untrusted flag; "
        "wrong = whole hearts indeterminate + cut hearts shown.",
        "",
        "Version 2.2's rules, the chosen ones, and the shipped ones (models/calcium/inference.py):",
        "",
        *table([summary["rules_2_2"], summary["rules_chosen"], summary["rules_shipped"]]),
        "",
        "The cut rule (registration as in 2.2):",
        "",
        *table(summary["region_rules"]),
        "",
        f"The registration rule, with {chosen['measure']} < {chosen['min_inside']}:",
        "",
        *table(summary["registration_rules"]),
        "",
        f"Chosen: {chosen['measure']} < {chosen['min_inside']}, "
        f"heart correlation >= {chosen['min_heart_ncc']}.",
        "",
        "Whole-heart crops in the full scan's category (measured; and with neither indeterminate):",
        "",
        "| crop | 2.2 rules | chosen rules | shipped rules |",
        "|---|---|---|---|",
    ]
    for name in summary["agreement_2_2"]:
        cells = [summary[f"agreement_{k}"][name] for k in ("2_2", "chosen", "shipped")]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c['same_category']:.0%}; {c['same_and_shown']:.0%}" for c in cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.fov_check")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out", type=Path, default=Path("training/calcium/results/fov_check"))
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from OUT/cases.jsonl"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        lines = (args.out / "cases.jsonl").read_text().splitlines()
        return write_report([json.loads(line) for line in lines], args)
    cases = []
    with (
        ProcessPoolExecutor(args.workers, initializer=_init, initargs=(str(args.weights),)) as pool,
        (args.out / "cases.jsonl").open("w") as stream,
    ):
        for case in pool.map(_job, case_plan(args.n, args.seed)):
            cases.append(case)
            stream.write(json.dumps(case) + "\n")
            stream.flush()
    return write_report(cases, args)


def write_report(cases: list[dict], args: argparse.Namespace) -> int:
    summary = report(cases)
    (args.out / "fov_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(summary, args.seed)
    (args.out / "fov_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
