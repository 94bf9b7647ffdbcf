"""Choose the exact method's presence threshold on validation phantoms, and install it.

python -m training.calcium.select_exact [--n 60] [--seed 5252] [--generator 2 [4 ...]]
                                        [--workers 2] [--weights DIR] [--no-install] [--out FILE]

The exact method (models/calcium/exact.py) labels a candidate voxel with the artery of highest
presence when that presence reaches a threshold, and scores the labelled voxels by the Agatston
definition. The threshold is the one choice it makes, so it is chosen here on phantoms that
neither training (seed 1001), the soft-presence choice (seed 5151) nor the held-out evaluation
(seed 424242) use: by default 60 generator-2 phantoms of seed 5252, balanced over the five
categories, generated on the fly and scored by the whole pipeline as `ctnode score` runs it
(registration, heart search, score network) once per phantom; each threshold is then applied to
the same presence probabilities. `--generator 2 4` makes the same case plan with each generator
version's variety and chooses on all of them together, so that a network trained on several
versions gets its threshold from the variety it was trained for, not from the narrowest one.
Choice: the highest linearly weighted kappa over all the cases' five categories, then the
highest ICC, then the threshold nearest 0.5 (a probability's own decision point). With
install (the default) the choice and its table go into the manifest (`score.exact`) and the
model cards are written again; the weight files are not touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from models.calcium.exact import exact_score
from models.calcium.inference import MANIFEST, WEIGHTS_DIR, CalciumScorer
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.plan import case_plan
from models.phantoms.variety import variety_for
from training.calcium import metrics
from training.calcium.cards import write_cards

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SEED = 5252  # used by nothing else: training 1001, soft presence 5151, held-out 424242

_scorer: CalciumScorer | None = None


def _init(weights: str) -> None:
    global _scorer  # one model per worker process, loaded once
    import torch

    torch.set_num_threads(1)
    _scorer = CalciumScorer(Path(weights), device="cpu")


def exact_totals(scorer: CalciumScorer, ct) -> tuple[list[float], float]:
    """The exact total at every threshold of THRESHOLDS and the regression total, from one
    pass of the pipeline."""
    centre, _, _ = scorer.locate_heart(ct)
    map_grid, presence = scorer.score_network(ct, centre)
    if scorer.region is not None:
        map_grid = map_grid * scorer.region
    candidates = scorer.candidates(ct, centre, presence)
    if candidates is None:
        return [0.0] * len(THRESHOLDS), float(map_grid.sum())
    totals = [exact_score(candidates, t).result.total for t in THRESHOLDS]
    return totals, float(map_grid.sum())


def _score_case(job: tuple[int, int, int, int]) -> dict:
    generator, index, seed, category = job
    case = generate_case(seed, category, CaseOptions(variety=variety_for(generator)))
    totals, regression = exact_totals(_scorer, case.grid.to_image(case.image))
    return {
        "generator": generator,
        "index": index,
        "truth": case.truth.total,
        "exact": totals,
        "regression": regression,
    }


def validation_note(n_cases: int, generators: list[int], seed: int) -> str:
    """What the choice was made on, for the manifest and the card."""
    versions = " and ".join(str(g) for g in generators)
    plural = "s" if len(generators) > 1 else ""
    return (
        f"{n_cases} phantoms of seed {seed} (case_plan) made by generator version{plural} "
        f"{versions}, scored by the whole pipeline"
    )


def agreement(truth: np.ndarray, predicted: np.ndarray) -> dict:
    reference_cat = metrics.score_categories(truth)
    predicted_cat = metrics.score_categories(predicted)
    return {
        "icc": metrics.icc_absolute_agreement(truth, predicted),
        "weighted_kappa": metrics.weighted_kappa(reference_cat, predicted_cat),
        "category_accuracy": metrics.category_accuracy(reference_cat, predicted_cat),
        "mae": metrics.mean_absolute_error(truth, predicted),
    }


def choose(rows: list[dict]) -> float:
    """The threshold with the highest weighted kappa, then ICC, then nearest 0.5."""
    best = max(
        rows,
        key=lambda r: (
            round(r["weighted_kappa"], 6),
            round(r["icc"], 6),
            -round(abs(r["presence_threshold"] - 0.5), 6),
        ),
    )
    return best["presence_threshold"]


def install(weights: Path, selection: dict) -> None:
    """The choice into the manifest's `score.exact` (weights untouched), cards rewritten."""
    path = weights / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["score"]["exact"] = {
        "presence_threshold": selection["chosen"],
        "selection": selection,
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    write_cards(weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.select_exact")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--generator",
        type=int,
        nargs="+",
        choices=(2, 3, 4),
        default=[2],
        help="generator versions: the same --n cases made by each (default: 2)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--install",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the choice into the manifest and the cards (default: yes)",
    )
    parser.add_argument("--out", type=Path, help="also write the selection (JSON) here")
    args = parser.parse_args(argv)
    if args.n * len(args.generator) < 2:
        parser.error("ICC needs two or more phantoms")

    jobs = [(g, *case) for g in args.generator for case in case_plan(args.n, args.seed)]
    with ProcessPoolExecutor(
        args.workers, initializer=_init, initargs=(str(args.weights),)
    ) as pool:
        cases = list(pool.map(_score_case, jobs))
    truth = np.array([c["truth"] for c in cases])
    rows = []
    for i, threshold in enumerate(THRESHOLDS):
        predicted = np.array([c["exact"][i] for c in cases])
        rows.append({"presence_threshold": threshold, **agreement(truth, predicted)})
        print(json.dumps(rows[-1]), flush=True)
    regression = agreement(truth, np.array([c["regression"] for c in cases]))
    selection = {
        "n_validation": len(cases),
        "validation": validation_note(len(cases), args.generator, args.seed),
        "generators": args.generator,
        "rows": rows,
        "regression": regression,
        "chosen": choose(rows),
    }
    print(f"chosen presence threshold: {selection['chosen']}; regression on the same: "
          f"{json.dumps(regression)}")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({**selection, "cases": cases}, indent=1) + "\n")
    if args.install:
        install(args.weights, selection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
