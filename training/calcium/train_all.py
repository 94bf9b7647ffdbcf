"""Reproduce the shipped calcium models in one go, within a time budget (GPU or CPU).

python -m training.calcium.train_all --work DIR [--minutes 9] [--workers 16] [--weights DIR]

Runs prepare (42 % of the budget) -> train_registration (20 %) -> train_score (the rest) ->
select_presence -> ship -> coronary_extent (the central 99.9 % of the truth's score per axis,
located by the installed registration, so after a first ship) -> ship again with the coronary
region and the heart search on, then times the whole inference pipeline on a 512 x 512 x 100
phantom on the training device.
Each step is also a command of its own (see the model cards) for longer or smaller runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from training.calcium import (
    coronary_extent,
    prepare,
    select_presence,
    ship,
    train_registration,
    train_score,
)

# As the shipped 2.0: the box holds the central 99.9 % of the training truth's score per axis.
REGION_QUANTILE = 0.999


def time_inference(weights: Path, repeats: int = 10) -> dict:
    from models.calcium.inference import CalciumScorer
    from models.phantoms.case import CaseOptions, generate_case

    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    scorer = CalciumScorer(weights)
    scorer.score(ct)  # warm-up (kernel selection, allocations)
    if scorer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        result = scorer.score(ct)
        seconds.append(result.seconds)
    report = {
        "device": str(scorer.device),
        "device_name": torch.cuda.get_device_name() if scorer.device.type == "cuda" else "cpu",
        "scan": "phantom 512x512x100, 2.5 mm",
        "seconds_median": statistics.median(seconds),
        "seconds_min": min(seconds),
        "truth": case.truth.total,
        "predicted": result.agatston_total,
    }
    if scorer.device.type == "cuda":
        report["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.train_all")
    parser.add_argument("--work", type=Path, required=True, help="folder for samples and runs")
    parser.add_argument("--minutes", type=float, default=9.0, help="total budget")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--n", type=int, default=1500, help="most training phantoms to make")
    parser.add_argument("--seed", type=int, default=1001)
    parser.add_argument("--weights", type=Path, help="install here (default: models/weights)")
    parser.add_argument("--registration-iterations", type=int, default=1200)
    args = parser.parse_args(argv)
    start = time.time()
    left = lambda: args.minutes - (time.time() - start) / 60  # noqa: E731
    data, runs = args.work / "data", args.work / "runs"

    prepare.main(
        [
            "--out",
            str(data),
            "--n",
            str(args.n),
            "--seed",
            str(args.seed),
            "--workers",
            str(args.workers),
            "--max-minutes",
            f"{0.42 * args.minutes:.2f}",
        ]
    )
    print(f"[train_all] samples ready, {left():.1f} min left", flush=True)
    train_registration.main(
        [
            "--data",
            str(data),
            "--out",
            str(runs / "registration"),
            "--iterations",
            str(args.registration_iterations),
            "--batch",
            "8",
            "--seed",
            str(args.seed),
            "--max-minutes",
            f"{0.2 * args.minutes:.2f}",
        ]
    )
    print(f"[train_all] registration trained, {left():.1f} min left", flush=True)
    train_score.main(
        [
            "--data",
            str(data),
            "--out",
            str(runs / "score"),
            "--iterations",
            "20000",
            "--batch",
            "8",
            "--patch",  # as the shipped model: 48^3 crops from anywhere in the score box
            "48",
            "48",
            "48",
            "--seed",
            str(args.seed),
            "--max-minutes",
            f"{max(0.5, left() - 0.9):.2f}",
        ]
    )
    print(f"[train_all] score trained, {left():.1f} min left", flush=True)
    select_presence.main(["--data", str(data), "--score", str(runs / "score")])
    n_samples = len(list(data.glob("sample_*.npz")))
    ship_args = [
        "--registration",
        str(runs / "registration"),
        "--score",
        str(runs / "score"),
        "--data-note",
        f"{n_samples} phantoms, python -m training.calcium.prepare --seed {args.seed}",
    ]
    if args.weights:
        ship_args += ["--weights", str(args.weights)]
    ship_args += ["--heart-search"]
    ship.main(ship_args)
    # The coronary region is checked against the heart as the installed model locates it.
    weights = args.weights or ship.WEIGHTS_DIR
    extent_args = ["--data", str(data), "--score", str(runs / "score"), "--weights", str(weights)]
    extent_args += ["--quantile", str(REGION_QUANTILE)]
    coronary_extent.main(extent_args)
    ship.main(ship_args)
    timing = time_inference(weights)
    (args.work / "timing.json").write_text(json.dumps(timing, indent=1))
    print(
        f"[train_all] inference timing: {json.dumps(timing)}; total {(time.time() - start) / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
