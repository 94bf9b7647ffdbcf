"""Choose how the score network's presence is applied at inference, on the validation phantoms.

python -m training.calcium.select_presence --data DIR --score RUN [--seed 1001] [--validation DIR]

The network is trained with a soft map (presence probability x correction x prior). Summed over
tens of thousands of candidate voxels (bone edges, noise), even small probabilities add up to a
few Agatston units, which moves a true 0 into the 1-10 category. A hard decision (a voxel
counts in full where its probability reaches a threshold, not at all below it) removes that
floor. This command scores validation phantoms (central crops on the true heart centre) with the
soft map and with hard thresholds: by default the split train_score held out; with
`--validation DIR`, every sample in a folder prepared from a seed of its own (a larger and
independent set: a run started from an earlier run's weights has seen part of its own split
under the earlier split; several folders, e.g. of two seeds, are scored together). It writes
presence_selection.json into the run folder: the figures of each and the choice (the highest
linearly weighted kappa over the five categories, then the highest ICC). `ship` applies it and
the model card shows the table. The held-out evaluation (evaluate.py) uses phantoms from
another seed, so choosing here does not touch the test set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models.calcium.networks import ScoreNet
from models.calcium.preprocess import SCORE_SIZE_XYZ
from training.calcium import metrics
from training.calcium.common import write_json
from training.calcium.data import load_folders, load_samples, split
from training.calcium.train_score import crop_offsets, crops

THRESHOLDS = (None, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # None: the soft product


def choose(rows: list[dict]) -> float | None:
    """The threshold of the row with the highest weighted kappa, then the highest ICC; the
    soft map (None) wins ties with a threshold, being what the network was trained as."""
    best = max(
        rows,
        key=lambda r: (
            round(r["weighted_kappa"], 6),
            round(r["icc"], 6),
            r["presence_threshold"] is None,
        ),
    )
    return best["presence_threshold"]


@torch.no_grad()
def validation_totals(net: ScoreNet, samples, index: np.ndarray) -> np.ndarray:
    net.eval()
    size_zyx = SCORE_SIZE_XYZ[::-1]
    boxes = torch.from_numpy(samples.score_box)
    totals = []
    for i in index:
        channels = crops(boxes, [i], crop_offsets(1, None, size_zyx, False), size_zyx)
        acquisition = torch.from_numpy(samples.acquisition[[i]])
        totals.append(float(net(channels, acquisition).sum()))
    return np.asarray(totals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.select_presence")
    parser.add_argument("--data", type=Path, required=True, help="folder of prepared samples")
    parser.add_argument("--score", type=Path, required=True, help="train_score run folder")
    parser.add_argument("--seed", type=int, help="split seed (default: the run's own)")
    parser.add_argument(
        "--validation",
        type=Path,
        nargs="+",
        help="score every sample of these prepared folders instead of the run's validation split",
    )
    args = parser.parse_args(argv)

    record = json.loads((args.score / "score_metrics.json").read_text())
    if args.validation is not None:
        samples = load_folders(args.validation)
        val_idx = np.arange(len(samples))
        names = ", ".join(folder.name for folder in args.validation)
        source = f"all {len(samples)} samples of {names}"
    else:
        # Runs before --split-seed existed split on their --seed.
        seed = record.get("split_seed", record["seed"]) if args.seed is None else args.seed
        samples = load_samples(args.data)
        _, val_idx = split(len(samples), 0.1, seed)
        source = f"the run's validation split (seed {seed})"
    if len(val_idx) < 2:
        parser.error(f"{len(val_idx)} validation phantom(s): ICC needs two or more")
    truth = samples.scores[val_idx].sum(1)
    state = torch.load(args.score / "score.pt", map_location="cpu", weights_only=True)
    rows = []
    for threshold in THRESHOLDS:
        net = ScoreNet(
            width=record["width"],
            presence_threshold=threshold,
            prior=record.get("prior", "summary"),
        )
        net.load_state_dict(state)
        predicted = validation_totals(net, samples, val_idx)
        reference_cat = metrics.score_categories(truth)
        predicted_cat = metrics.score_categories(predicted)
        rows.append(
            {
                "presence_threshold": threshold,
                "icc": metrics.icc_absolute_agreement(truth, predicted),
                "weighted_kappa": metrics.weighted_kappa(reference_cat, predicted_cat),
                "category_accuracy": metrics.category_accuracy(reference_cat, predicted_cat),
                "mae": metrics.mean_absolute_error(truth, predicted),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    chosen = choose(rows)
    write_json(
        args.score / "presence_selection.json",
        {"n_validation": len(val_idx), "validation": source, "rows": rows, "chosen": chosen},
    )
    print(f"chosen presence threshold: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
