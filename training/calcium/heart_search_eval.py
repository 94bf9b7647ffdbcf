"""How well the installed registration places the heart, without and with the heart search.

python -m training.calcium.heart_search_eval --data DIR [--weights models/weights] [--seed 7]
    [--out training/calcium/results/heart_search.json]

On prepared samples (prepare.py) the registration volume and the true heart centre are known.
Each scan is located twice: as generated (the generator's own variation of position, size
and field of view), and once more after a random known perturbation within the ranges the
registration was trained on (translation +-40 mm, rotation +-15 deg, scale +-15 %). The
error is the distance between the true heart centre and the one the network gives alone (t)
or after the heart search (t + A shift). Use samples the registration did not train on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.calcium import networks as nets
from models.calcium.inference import WEIGHTS_DIR, CalciumScorer, heart_offset_mm
from models.calcium.preprocess import REG_SIZE, REG_SPACING_MM
from training.calcium.common import write_json
from training.calcium.data import load_samples
from training.calcium.train_registration import heart_error_mm, random_perturbation

RESULTS = Path(__file__).resolve().parent / "results" / "heart_search.json"


def summary(errors: list[float]) -> dict:
    e = np.asarray(errors)
    return {
        "mean_mm": float(e.mean()),
        "median_mm": float(np.median(e)),
        "p95_mm": float(np.percentile(e, 95)),
        "max_mm": float(e.max()),
        "within_21_mm": float((e <= 21.0).mean()),  # the score network's training jitter
    }


@torch.inference_mode()
def heart_errors(scorer: CalciumScorer, samples, generator: torch.Generator | None) -> dict:
    """Errors (mm) of the network alone and with the search; perturbed when a generator is
    given (train_registration's perturbations and error, an identity for the scans as
    generated)."""
    half_extent_mm = REG_SIZE * REG_SPACING_MM / 2
    alone, searched, seconds = [], [], []
    for volume, offset in zip(samples.registration, samples.heart_offset_mm, strict=True):
        fine = nets.registration_scale(torch.from_numpy(volume.astype(np.float32)))
        b, s = torch.eye(3)[None], torch.zeros(1, 3)
        if generator is not None:
            b, s = random_perturbation(1, generator, "cpu")
            fine = nets.warp(fine[None, None], b, s, half_extent_mm)[0, 0]
        start = time.perf_counter()
        a, t, _, shift_mm, _ = scorer.align_heart(fine.to(scorer.device))
        seconds.append(time.perf_counter() - start)
        truth = torch.from_numpy(offset.astype(np.float32))[None]
        for errors, located in ((alone, t), (searched, heart_offset_mm(a, t, shift_mm))):
            located = torch.as_tensor(located, dtype=torch.float32)[None]
            errors.append(float(heart_error_mm(located, b, s, truth)[0]))
    return {
        "network": summary(alone),
        "network_and_search": summary(searched),
        "seconds_median": float(np.median(seconds)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.heart_search_eval")
    parser.add_argument("--data", type=Path, required=True, help="folder of prepared samples")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--seed", type=int, default=7, help="seed of the perturbations")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    samples = load_samples(args.data, with_score_box=False)
    scorer = CalciumScorer(args.weights, device="cpu", heart_search=True)
    result = {
        "data": f"{len(samples)} samples of {args.data.name}",
        "model": scorer.name,
        "as_generated": heart_errors(scorer, samples, None),
        "perturbed": heart_errors(scorer, samples, torch.Generator().manual_seed(args.seed)),
        "perturbation_seed": args.seed,
        "threads": torch.get_num_threads(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
