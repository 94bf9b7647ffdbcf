"""Evaluate the installed calcium model on held-out phantoms and on the real negative control.

python -m training.calcium.evaluate [--n 200] [--seed 424242] [--workers 2] [--weights DIR]
                                    [--real ../shared/data/real/lung_pet_ct_dx_A0001]
                                    [--heart-search | --no-heart-search]

Held-out phantoms are generated on the fly from a seed never used in training (training uses
1001), balanced over the five categories, and scored by the whole pipeline (registration,
crop, score network), exactly as `ctnode score` would. Reported: ICC(A,1) on the total and per
artery, linearly weighted kappa over the five categories, category accuracy, mean absolute
error, Bland-Altman (over the scored cases); how many results were indeterminate (an untrusted
quality flag) and how many were not scored (contrast gate); figures; and the scores of both reconstructions of the real scan, which has
no visible coronary calcium. Results go into calcium_evaluation.json beside the weights and
into the score model's card.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from models.calcium.inference import WEIGHTS_DIR, CalciumScorer
from models.calcium.networks import ARTERY_CHANNELS
from models.phantoms.case import generate_case
from models.phantoms.plan import case_plan
from node.volume import read_ct
from training.calcium import metrics
from training.calcium.cards import EVALUATION, write_cards

REAL_DEFAULT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "lung_pet_ct_dx_A0001"
)

_scorer: CalciumScorer | None = None


def _init(weights: str, heart_search: bool | None) -> None:
    global _scorer  # one model per worker process, loaded once
    import torch

    torch.set_num_threads(1)
    _scorer = CalciumScorer(Path(weights), device="cpu", heart_search=heart_search)


def _score_case(job: tuple[int, int, int]) -> dict:
    index, seed, category = job
    case = generate_case(seed, category)
    result = _scorer.score(case.grid.to_image(case.image))
    return {
        "index": index,
        "seed": seed,
        "truth": case.truth.total,
        "truth_per_artery": case.truth.per_artery,
        "predicted": result.agatston_total,  # None: not scored (contrast gate)
        "predicted_per_artery": result.agatston_per_artery,
        "indeterminate": result.indeterminate,
        "flags": result.flags,
        "outside_region_au": result.outside_region_au,
        "seconds": result.seconds,
    }


def score_real(scorer: CalciumScorer, folder: Path) -> list[dict]:
    out = []
    for series in sorted(p for p in folder.iterdir() if p.is_dir()):
        result = scorer.score(read_ct(series))
        out.append(
            {
                "series": series.name,
                **{k: v for k, v in result.to_dict().items() if k != "registration"},
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.evaluate")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=424242)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--real", type=Path, default=REAL_DEFAULT, help="real negative control folder"
    )
    parser.add_argument(
        "--heart-search",
        action=argparse.BooleanOptionalAction,
        help="refine the heart centre by the search (default: as the manifest says)",
    )
    args = parser.parse_args(argv)

    jobs = case_plan(args.n, args.seed)
    with ProcessPoolExecutor(
        args.workers, initializer=_init, initargs=(str(args.weights), args.heart_search)
    ) as pool:
        rows = list(
            tqdm(
                pool.map(_score_case, jobs), total=len(jobs), desc="held-out phantoms", unit="case"
            )
        )
    # Agreement is measured on every scored case, as the measured numbers (an indeterminate
    # result's number included, so that the figures stay comparable with earlier models);
    # indeterminate results and the ones not scored at all are counted beside them.
    scored = [r for r in rows if r["predicted"] is not None]
    truth = [r["truth"] for r in scored]
    predicted = [r["predicted"] for r in scored]
    summary = metrics.summary(truth, predicted)
    summary["n_indeterminate"] = sum(r["indeterminate"] for r in rows)
    summary["n_not_scored"] = len(rows) - len(scored)
    per_artery = {
        a: metrics.icc_absolute_agreement(
            [r["truth_per_artery"][a] for r in scored],
            [r["predicted_per_artery"][a] for r in scored],
        )
        for a in ARTERY_CHANNELS
    }
    flags: dict[str, int] = {}
    for r in rows:
        for flag in r["flags"]:
            flags[flag] = flags.get(flag, 0) + 1
    title = f"held-out phantoms (seed {args.seed}, n={len(rows)})"
    metrics.scatter_plot(truth, predicted, args.weights / "calcium_scatter.png", title,
                         icc=summary["icc"], kappa=summary["weighted_kappa"])  # fmt: skip
    metrics.bland_altman_plot(truth, predicted, args.weights / "calcium_bland_altman.png", title)
    real = []
    if args.real.exists():
        real = score_real(CalciumScorer(args.weights, "cpu", args.heart_search), args.real)
    else:  # the card then has no real-scan table; say why rather than leave it silently out
        print(f"real negative control not found at {args.real}: not scored (--real DIR)",
              file=sys.stderr)  # fmt: skip
    report = {
        "seed": args.seed,
        "heart_search": args.heart_search,  # None: as the manifest says
        "summary": summary,
        "per_artery_icc": per_artery,
        "flag_counts": flags,
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {len(jobs)} cases, {args.workers} worker(s), CPU inference",
        "real": real,
        "cases": rows,
    }
    (args.weights / EVALUATION).write_text(json.dumps(report, indent=1) + "\n")
    write_cards(args.weights)
    keys = ("n", "icc", "weighted_kappa", "category_accuracy", "mae", "n_indeterminate")
    shown = {k: summary[k] for k in (*keys, "n_not_scored")}
    print(
        json.dumps(
            {
                **shown,
                "per_artery_icc": per_artery,
                "real": [(r["series"], r["agatston_total"]) for r in real],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
