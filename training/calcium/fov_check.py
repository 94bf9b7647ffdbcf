"""Choose the rule of `heart_outside_field_of_view` on own-style field-of-view variants, and
measure the cardiac-field-of-view agreement (issue 25 item 2).

python -m training.calcium.fov_check [--n 100] [--seed 6464] [--workers 2] [--weights DIR]
                                     [--out training/calcium/results/fov_check] [--report-only]

Each phantom (generator 2, seed 6464: used by nothing else; training 1001, soft presence
5151, exact threshold 5252, held-out 424242) is scored as a whole chest scan and as four
crops of the same voxels:

- cardiac: a dedicated calcium-scoring reconstruction: a 220 mm field of view centred on the
  heart (+-8 mm), from 5-35 mm above the heart (about the carina) to 10-20 mm below it. The
  heart is whole: the flag must not be raised;
- cut_below / cut_above: the same field of view, but the scan ends (starts) at the heart's
  middle: half the heart is missing and the flag must be raised;
- cut_side: the 220 mm window shifted sideways so that the heart's centre lies on its edge
  (cut there even at the scan's edge).

Per crop it records the fraction of the score box and of the coronary region (around the
located heart) inside the scan, the score and the other flags. The rule is the coronary-region
fraction below a threshold; the threshold chosen is the one with the fewest wrong decisions
(whole hearts flagged, plus cut hearts whose score would be shown: no untrusted flag at all,
this one or another such as registration_failure), then the lowest (flag only what is
clearly cut). The score box
rule of version 2.2 (box fraction < 0.6) is reported beside it. Then the agreement that issue
25 asks for: the cardiac crop's category equal to the full scan's (target >= 95 %), counting a
flagged crop as a disagreement (its category is not shown).

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
from models.calcium.inference import MIN_BOX_INSIDE, WEIGHTS_DIR, CalciumScorer
from models.calcium.result import UNTRUSTED_FLAGS
from models.phantoms.case import generate_case
from models.phantoms.plan import case_plan

SEED = 6464
CARDIAC_FOV_MM = 220.0
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
WHOLE, CUT = ("full", "cardiac"), ("cut_below", "cut_above", "cut_side")
OUTSIDE = "heart_outside_field_of_view"

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
    return {
        "cardiac": window(xy, bottom, top),
        "cut_below": window(xy, middle_z, top),
        "cut_above": window(xy, bottom, middle_z),
        "cut_side": crop(
            ct, [*(centre[:2] + side - half), bottom], [*(centre[:2] + side + half), top], False
        ),
    }


def _score(ct: sitk.Image) -> dict:
    result = _scorer.score(ct)
    centre = np.asarray(result.heart_centre_mm)
    return {
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
    rows = {"full": _score(ct)}
    rows.update({name: _score(image) for name, image in variants(case, ct, rng).items()})
    return {"index": index, "seed": seed, "truth": case.truth.total, "rows": rows}


def _other_untrusted(row: dict) -> bool:
    """An untrusted flag other than the one chosen here (the result is indeterminate anyway)."""
    return any(flag in UNTRUSTED_FLAGS and flag != OUTSIDE for flag in row["flags"])


def rule_errors(cases: list[dict], key: str, threshold: float) -> dict:
    """Flags the rule raises per variant, and its wrong decisions: a whole heart flagged, or a
    cut heart left with no untrusted flag at all (neither this one nor, e.g., a failed
    registration: only then would its score be shown)."""
    flagged = {name: sum(c["rows"][name][key] < threshold for c in cases) for name in WHOLE + CUT}
    shown_cut = sum(
        not (c["rows"][n][key] < threshold or _other_untrusted(c["rows"][n]))
        for c in cases
        for n in CUT
    )
    wrong = sum(flagged[n] for n in WHOLE) + shown_cut
    return {"measure": key, "threshold": threshold, "flagged": flagged, "cut_shown": shown_cut,
            "wrong": wrong}  # fmt: skip


def agreement(cases: list[dict], key: str, threshold: float) -> dict:
    """Cardiac crop vs full scan: same category, and same category with a crop (or full
    scan) under any untrusted flag counted as indeterminate, i.e. a disagreement."""
    same = shown_same = 0
    for c in cases:
        full, cardiac = c["rows"]["full"], c["rows"]["cardiac"]
        same += cardiac["category"] == full["category"]
        shown = all(r[key] >= threshold and not _other_untrusted(r) for r in (full, cardiac))
        shown_same += shown and cardiac["category"] == full["category"]
    n = len(cases)
    return {"n": n, "same_category": same / n, "same_category_and_unflagged": shown_same / n}


def report(cases: list[dict]) -> dict:
    rows = [rule_errors(cases, "coronary_region", t) for t in THRESHOLDS]
    best = min(rows, key=lambda r: (r["wrong"], r["threshold"]))
    box = rule_errors(cases, "score_box", MIN_BOX_INSIDE)
    return {
        "n": len(cases),
        "region_rules": rows,
        "chosen": best["threshold"],
        "box_rule_2_2": box,
        "agreement_region_rule": agreement(cases, "coronary_region", best["threshold"]),
        "agreement_box_rule_2_2": agreement(cases, "score_box", MIN_BOX_INSIDE),
    }


def markdown(summary: dict, seed: int) -> str:
    n = summary["n"]
    lines = [
        f"# heart_outside_field_of_view on {n} own-style phantoms (seed {seed}) and their crops",
        "",
        "Flags raised per variant (whole hearts: full, cardiac; cut hearts: cut_below, "
        "cut_above, cut_side), per rule:",
        "",
        "| rule | full | cardiac | cut_below | cut_above | cut_side | cut hearts shown | wrong |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in [summary["box_rule_2_2"], *summary["region_rules"]]:
        f = r["flagged"]
        lines.append(
            f"| {r['measure']} < {r['threshold']} | {f['full']} | {f['cardiac']} | "
            f"{f['cut_below']} | {f['cut_above']} | {f['cut_side']} | {r['cut_shown']} | "
            f"{r['wrong']} |"
        )
    lines += [
        "",
        "cut hearts shown: cut crops with no untrusted flag (this rule's or another), whose "
        "score would be shown; wrong = whole hearts flagged + cut hearts shown.",
        "",
        f"Chosen: coronary_region < {summary['chosen']}.",
        "",
    ]
    for name in ("agreement_box_rule_2_2", "agreement_region_rule"):
        a = summary[name]
        lines.append(
            f"- {name}: cardiac crop in the full scan's category {a['same_category']:.1%}; "
            f"the same with neither indeterminate {a['same_category_and_unflagged']:.1%} "
            f"(n={a['n']})"
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
