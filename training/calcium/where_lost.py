"""Where a style's true calcium score is lost by the exact method (a diagnosis, chooses nothing).

python -m training.calcium.where_lost [--style alt|own] [--n 40] [--workers 2] [--out FILE.json]
                                      [--lung-to-fat MM]

For each case, every voxel of the truth's own score (models.agatston.voxel_contributions on the
case's image and truth labels) is followed through the shipped scorer, as `ctnode score` runs it
(registration, heart search, score network, exact method), and its contribution is put in the
first bin that applies:

- outside_box: outside the score network's 192 x 192 x 180 mm box around the located heart;
- outside_region: in the box, outside the coronary region (nothing counts there);
- not_present: inside the region, but no artery's presence reaches the threshold;
- wrong_artery: present, but labelled with another artery than the truth's;
- counted: labelled with the truth's artery.

Summed over the cases, per artery, in Agatston units and as a share of the truth. It tells
whether a style's loss is in locating the heart (box, region) or in the network's decisions
(presence, artery), so that training breadth (issue 25 item 3) aims at the right part. It also
reports the located heart centre's distance from the style's true heart centre.

`--lung-to-fat MM` first replaces the lung within MM of the heart (its myocardium, epicardial
fat and coronary arteries) by fat (-95 HU with 12 HU of white noise): a counterfactual that asks
whether the network finds calcium only where the heart meets the lung, which generator versions
2 and 3 always show (the diagnosis behind generator version 4, results/fat_2.4/).

The second style is evaluation-only: this reads it to describe the failure, and nothing is
chosen from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from models.agatston import voxel_contributions
from models.calcium.coronary_region import inside_region, region_bounds
from models.calcium.exact import label_candidates
from models.calcium.inference import WEIGHTS_DIR, CalciumScorer
from models.calcium.preprocess import grid_indices, score_grid
from models.labels import ARTERIES, Label
from models.phantoms.plan import case_plan

FAT_HU, FAT_NOISE_HU = -95.0, 12.0
LUNG_BELOW_HU = -300.0
HEART_LABELS = (Label.HEART, Label.EPICARDIAL_FAT, Label.CORONARY_ARTERY)
BINS = ("outside_box", "outside_region", "not_present", "wrong_artery", "counted")
ALT_SEED, OWN_SEED = 2525, 424242  # the seeds and plans evaluate_styles uses

_scorer: CalciumScorer | None = None


def _init(weights: str) -> None:
    global _scorer  # one model per worker process, loaded once
    import torch

    torch.set_num_threads(1)
    _scorer = CalciumScorer(Path(weights), device="cpu", method="exact")


def style_case(style: str, seed: int, category: int, generator: int = 2):
    """(image, labels as SimpleITK images, true heart centre mm) of one case: our generator
    (`generator`: its version's variety) or the second style ("alt")."""
    if style == "own":
        from models.phantoms.case import CaseOptions, generate_case
        from models.phantoms.variety import variety_for
        from training.calcium.prepare import heart_centre

        case = generate_case(seed, category, CaseOptions(variety=variety_for(generator)))
        return (case.grid.to_image(case.image), case.grid.to_image(case.labels),
                heart_centre(case.patient))  # fmt: skip
    from training.phantoms_alt.case import generate_case as generate_alt
    from training.phantoms_alt.grid import to_image

    case = generate_alt(seed, category)
    position = case.acquisition.position
    centre = np.asarray(case.patient.heart.centre, dtype=float)
    return (to_image(case.image, case.grid, position), to_image(case.labels, case.grid, position),
            centre)  # fmt: skip


def lung_to_fat(ct: sitk.Image, labels: sitk.Image, depth_mm: float, seed: int) -> sitk.Image:
    """`ct` with the lung (HU under -300) within `depth_mm` of the heart made fat."""
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    heart = np.isin(sitk.GetArrayFromImage(labels), HEART_LABELS)
    distance = ndimage.distance_transform_edt(~heart, sampling=ct.GetSpacing()[::-1])
    lung = (distance > 0) & (distance <= depth_mm) & (hu < LUNG_BELOW_HU)
    noise = np.random.default_rng(seed).standard_normal(int(lung.sum()))
    hu[lung] = FAT_HU + FAT_NOISE_HU * noise
    out = sitk.GetImageFromArray(hu)
    out.CopyInformation(ct)
    return out


def follow(scorer: CalciumScorer, ct: sitk.Image, labels: sitk.Image) -> tuple[dict, np.ndarray]:
    """Each artery's truth score split into BINS, and the located heart centre."""
    hu = sitk.GetArrayFromImage(ct)
    truth = voxel_contributions(hu, sitk.GetArrayFromImage(labels), ct.GetSpacing()[::-1])
    centre, _, _ = scorer.locate_heart(ct)
    _, presence = scorer.score_network(ct, centre)
    ref = score_grid(centre, presence.shape[1:][::-1])
    low, high = region_bounds(scorer.region_mm)
    origin, spacing = np.asarray(ct.GetOrigin()), np.asarray(ct.GetSpacing())
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    split = {}
    for a, artery in enumerate(ARTERIES):
        zyx, value = truth[artery]
        bins = dict.fromkeys(BINS, 0.0)
        if len(value):
            xyz, in_box = grid_indices(ct, zyx, ref)
            world = origin + (zyx[::-1].T * spacing) @ direction.T
            in_region = inside_region((world - centre)[:, ::-1], low, high)
            p = np.zeros((len(value), 3), np.float32)
            p[in_box] = presence[:, xyz[in_box, 2], xyz[in_box, 1], xyz[in_box, 0]].T
            label = label_candidates(p, scorer.exact_threshold)
            bins["outside_box"] = float(value[~in_box].sum())
            rest = in_box & ~in_region
            bins["outside_region"] = float(value[rest].sum())
            inside = in_box & in_region
            bins["not_present"] = float(value[inside & (label < 0)].sum())
            bins["wrong_artery"] = float(value[inside & (label >= 0) & (label != a)].sum())
            bins["counted"] = float(value[inside & (label == a)].sum())
        split[artery] = bins
    return split, centre


def _job(job: tuple[str, int, int, int, float]) -> dict:
    style, index, seed, category, fat_mm = job
    ct, labels, true_centre = style_case(style, seed, category)
    if fat_mm > 0:
        ct = lung_to_fat(ct, labels, fat_mm, seed)
    split, centre = follow(_scorer, ct, labels)
    return {"index": index, "seed": seed, "split": split,
            "centre_error_mm": float(np.linalg.norm(centre - true_centre))}  # fmt: skip


def summarise(rows: list[dict]) -> dict:
    out = {}
    for artery in ARTERIES:
        total = {b: sum(r["split"][artery][b] for r in rows) for b in BINS}
        truth = sum(total.values())
        out[artery] = {"truth_au": truth, **{b: total[b] for b in BINS},
                       **{f"{b}_share": total[b] / truth if truth else None for b in BINS}}  # fmt: skip
    errors = np.array([r["centre_error_mm"] for r in rows])
    out["centre_error_mm"] = {"median": float(np.median(errors)),
                              "p95": float(np.percentile(errors, 95)), "max": float(errors.max())}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.where_lost")
    parser.add_argument("--style", choices=("alt", "own"), default="alt")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--lung-to-fat", type=float, default=0.0, metavar="MM",
        help="make the lung within MM of the heart fat before scoring (a counterfactual)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.style == "alt":
        from training.phantoms_alt.output import plan

        seed, jobs = ALT_SEED, plan(args.n, ALT_SEED)
    else:
        seed, jobs = OWN_SEED, case_plan(args.n, OWN_SEED)
    jobs = [(args.style, *job, args.lung_to_fat) for job in jobs]
    with ProcessPoolExecutor(
        args.workers, initializer=_init, initargs=(str(args.weights),)
    ) as pool:
        rows = list(pool.map(_job, jobs))
    summary = {"style": args.style, "n": len(rows), "seed": seed,
               "lung_to_fat_mm": args.lung_to_fat, "arteries": summarise(rows)}  # fmt: skip
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(json.dumps({**summary, "cases": rows}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
