"""Train the direct Agatston regression ConvNet (score map per artery).

python -m training.calcium.train_score --data DIR [DIR ...] --out DIR [--iterations N] [--seed S]
                                       [--split-seed S] [--init RUN/score.pt]
                                       [--patch Z Y X] [--max-minutes M] [--appearance P]

Each sample's score box is centred on the phantom's true heart centre and is larger than the
network's inference crop by +-21 mm in plane and +-20 mm in z. Every step cuts a training crop
from it at a uniformly random position: by default a crop of the inference size, so the heart
sits up to +-21 mm / +-20 mm off centre, which stands in for the registration's error; with
`--patch` a smaller crop (the network is fully convolutional), which costs a fraction of the
compute per step and shows the network every part of the box, edges included.

Loss, per sample:

* the score itself: squared error of log(1 + score) per artery and for the total, against the
  score that lies inside the crop (a crop can cut a lesion off). Agatston scores span five
  orders of magnitude; on the log scale a miss of 0 vs 5 weighs about as much as 400 vs 2000,
  which is what the risk categories care about;
* plus `--placement-weight` x the placement loss (`placement_loss`) against the truth's own
  score density (each counted voxel's share of the Agatston score, prepare.score_density): on
  the candidate voxels (those with native voxels at 130 HU or more, where the map can be
  non-zero) a class-balanced binary cross-entropy of each artery's presence, and a squared
  error of the log correction against log(density / prior). The network still regresses the
  score directly (its output is the map, its score the map's sum); the placement term tells it
  where the score lies instead of leaving it to find out from totals alone, which makes
  training converge with far fewer samples and makes the map a faithful decision feedback.

With `--appearance P` each training crop's tissue under 130 HU gets a random look with
probability P (`augment.py`: a monotone HU map and noise; the candidates are never touched), so
that the decisions rest less on one generator's tissue values (tried in candidate 2.8, not
shipped: training/calcium/results/appearance_2.8/).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.agatston import risk_category
from models.calcium.inference import pick_device
from models.calcium.networks import ARTERY_CHANNELS, MAX_LOG_CORRECTION, PRIORS, ScoreNet
from models.calcium.preprocess import SCORE_SIZE_XYZ
from training.calcium import augment
from training.calcium.common import run_record, save_curve, seed_everything, write_json
from training.calcium.data import load_folders, split
from training.calcium.prepare import BOX_SIZE_XYZ


def crop_offsets(
    n: int, rng: np.random.Generator, size_zyx, jitter: bool
) -> list[tuple[int, int, int]]:
    """(z, y, x) corner of each crop in its score box: uniformly random over the box
    (training) or central (validation)."""
    box_zyx = np.asarray(BOX_SIZE_XYZ[::-1])
    room = box_zyx - np.asarray(size_zyx)
    return [
        tuple(int(rng.integers(0, r + 1)) if jitter else int(r // 2) for r in room)
        for _ in range(n)
    ]


def crops(boxes: torch.Tensor, index: np.ndarray, offsets, size_zyx) -> torch.Tensor:
    """Network crops (B, 3, Z, Y, X) cut from the score boxes; `boxes` stays where it is (on
    the GPU when training there)."""
    sz, sy, sx = size_zyx
    return torch.stack(
        [
            boxes[i, :, z : z + sz, y : y + sy, x : x + sx]
            for i, (z, y, x) in zip(index, offsets, strict=True)
        ]
    ).float()


def density_crops(density, index: np.ndarray, offsets, size_zyx, device) -> torch.Tensor:
    """The score density under each crop on the crop's grid (B, 3, Z, Y, X)."""
    size_zyx = np.asarray(size_zyx)
    out = torch.zeros((len(index), len(ARTERY_CHANNELS), *size_zyx), device=device)
    for b, (i, corner) in enumerate(zip(index, offsets, strict=True)):
        rows, values = density[i]
        local = rows[:, 1:] - np.asarray(corner)
        inside = np.all((local >= 0) & (local < size_zyx), axis=1)
        if inside.any():
            at = torch.from_numpy(np.column_stack([rows[inside, :1], local[inside]])).to(device)
            out[b].index_put_(tuple(at.T), torch.from_numpy(values[inside]).to(device), True)
    return out


def one_cycle_lr(done: float, peak: float, warm: float = 0.05) -> float:
    """Learning rate at fraction `done` of the run: linear warm-up from peak/25 over the first
    5 %, then cosine annealing to peak/10^4 (torch's OneCycleLR shape, driven by a fraction)."""
    done = min(max(done, 0.0), 1.0)
    if done < warm:
        return peak * (0.04 + 0.96 * done / warm)
    cosine = 0.5 * (1 + math.cos(math.pi * (done - warm) / (1 - warm)))
    return peak * (1e-4 + (1 - 1e-4) * cosine)


def log_loss(map_: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    predicted = map_.sum(dim=(2, 3, 4))
    per_artery = (torch.log1p(predicted) - torch.log1p(target)) ** 2
    total = (torch.log1p(predicted.sum(1)) - torch.log1p(target.sum(1))) ** 2
    return per_artery.mean(1) + total


PRESENT_AU = 0.05  # a voxel "carries score" when its share is at least this (Agatston units)
PRESENCE_WEIGHT = 5.0


def placement_loss(
    presence_logit: torch.Tensor,
    log_correction: torch.Tensor,
    prior: torch.Tensor,
    density: torch.Tensor,
) -> torch.Tensor:
    """Which candidate calcium is coronary, in which artery, and how much, against the
    truth's own score density.

    Only candidate voxels count (prior > 0; elsewhere the map is zero by construction).
    Presence: class-balanced binary cross-entropy per artery channel (the mean over candidate
    voxels that carry that artery's score plus the mean over those that do not; bone and noise
    outnumber coronary calcium a hundred to one, and a plain mean would teach "never"), x 5.
    Correction: squared error of its log against log(density / prior) on the voxels that carry
    score, the ratio bounded like the correction itself."""
    candidate = (prior > 0).float().expand_as(density)
    present = (density >= PRESENT_AU).float() * candidate
    absent = candidate - present
    bce = F.binary_cross_entropy_with_logits(presence_logit, present, reduction="none")
    dims = (1, 2, 3, 4)
    n_present = present.sum(dim=dims)
    balanced = (bce * present).sum(dim=dims) / n_present.clamp(min=1) + (bce * absent).sum(
        dim=dims
    ) / absent.sum(dim=dims).clamp(min=1)
    ratio = (density.clamp(min=PRESENT_AU) / prior.clamp(min=1e-3)).log()
    target = ratio.clamp(-MAX_LOG_CORRECTION, MAX_LOG_CORRECTION)
    correction_error = (log_correction - target) ** 2 * present
    return PRESENCE_WEIGHT * balanced + correction_error.sum(dim=dims) / n_present.clamp(min=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.train_score")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True,
        help="folders of prepared samples (several: trained on together, in the order given)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed",
        type=int,
        help="seed of the 10 %% validation split (default: --seed); keep it fixed across an "
        "--init chain so that no run validates on what an earlier run trained on",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int)
    parser.add_argument(
        "--patch",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=SCORE_SIZE_XYZ[::-1],
        help="training crop in score voxels (default: the inference crop); smaller is cheaper",
    )
    parser.add_argument(
        "--init", type=Path, help="start from these weights (score.pt of an earlier run)"
    )
    parser.add_argument(
        "--placement-weight", type=float, default=1.0, help="weight of the placement loss"
    )
    parser.add_argument(
        "--prior",
        choices=PRIORS,
        default="candidate",
        help="what the map multiplies (models/calcium/networks.PRIORS; summary: version 1.0)",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop early after this much training time"
    )
    parser.add_argument(
        "--appearance",
        type=float,
        default=0.0,
        metavar="P",
        help="give each training crop's tissue under 130 HU a random look with probability P "
        "(augment.py; default 0: off, as in every shipped model)",
    )
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    samples = load_folders(args.data, limit=args.limit)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    train_idx, val_idx = split(len(samples), 0.1, split_seed)
    rng = np.random.default_rng(args.seed)
    look_rng = torch.Generator().manual_seed(args.seed)

    net = ScoreNet(width=args.width, prior=args.prior)
    if args.init is not None:  # a further stage of training (its command is in the card)
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    net = net.to(device)
    boxes = torch.from_numpy(samples.score_box).to(device)  # float16: 3 MB per sample
    acquisition_all = torch.from_numpy(samples.acquisition).to(device)
    scores_all = torch.from_numpy(samples.scores).to(device)
    use_amp = device.type == "cuda"

    def train_step(pick: np.ndarray, optimiser) -> float:
        net.train()
        offsets = crop_offsets(len(pick), rng, args.patch, jitter=True)
        channels = crops(boxes, pick, offsets, args.patch)
        if args.appearance > 0:
            channels = augment.appearance(channels, look_rng, args.appearance)
        density = density_crops(samples.density, pick, offsets, args.patch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            map_, logit, correction, prior = net.forward_factors(channels, acquisition_all[pick])
        placement = placement_loss(logit.float(), correction.float(), prior, density)
        # The score target is what lies inside this crop: a jittered crop can cut a lesion off.
        visible = density.sum(dim=(2, 3, 4))
        loss = (log_loss(map_.float(), visible) + args.placement_weight * placement).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimiser.step()
        return loss.item()

    def draw() -> np.ndarray:
        return rng.choice(
            train_idx, size=min(args.batch, len(train_idx)), replace=len(train_idx) < args.batch
        )

    start = time.time()
    deadline = None if args.max_minutes is None else start + 60 * args.max_minutes
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    history = {"train": [], "validation": []}
    running = []
    step, next_check = 0, 0.0
    progress = tqdm(total=args.iterations, desc="score", unit="it")
    while step < args.iterations and (deadline is None or time.time() < deadline):
        # One-cycle schedule over the run's progress: steps, or time when there is a budget,
        # so that a device that speeds up or slows down (a shared CPU) still gets the full
        # schedule within the budget.
        done = step / args.iterations
        if deadline is not None:
            done = max(done, (time.time() - start) / (deadline - start))
        for group in optimiser.param_groups:
            group["lr"] = one_cycle_lr(done, args.lr)
        running.append(train_step(draw(), optimiser))
        step += 1
        progress.update()
        if done >= next_check or step == args.iterations:
            next_check += 1 / 12
            val = evaluate(net, boxes, val_idx, acquisition_all, scores_all, use_amp)
            history["train"].append((step, float(np.mean(running))))
            history["validation"].append((step, val["loss"]))
            running = []
            tqdm.write(
                f"step {step}: train {history['train'][-1][1]:.3f} validation {val['loss']:.3f} "
                f"category accuracy {val['category_accuracy']:.2f} MAE {val['mae_total']:.1f}"
            )
            torch.save({"step": step, "model": net.state_dict()}, args.out / "checkpoint.pt")
    progress.close()
    iterations = step

    final = evaluate(net, boxes, val_idx, acquisition_all, scores_all, use_amp)
    torch.save(net.state_dict(), args.out / "score.pt")
    save_curve(
        history, args.out / "score_curve.png", "Score ConvNet training", "log1p squared error"
    )
    record = run_record(args, device, time.time() - start, len(train_idx), len(val_idx),
                        data=[str(folder) for folder in args.data],
                        iterations_run=iterations, split_seed=split_seed, init=str(args.init) if args.init else None, prior=args.prior, placement_weight=args.placement_weight, patch_zyx=list(args.patch), appearance=args.appearance,
                        validation=final, history=history)  # fmt: skip
    write_json(args.out / "score_metrics.json", record)
    print(
        f"validation: loss {final['loss']:.3f}, category accuracy {final['category_accuracy']:.3f} (n={final['n']})"
    )
    return 0


@torch.no_grad()
def evaluate(net, boxes, index, acquisition, scores, use_amp) -> dict:
    """Validation on central crops (the true heart centre)."""
    net.eval()
    rng = np.random.default_rng(0)
    predicted = []
    for start in range(0, len(index), 4):
        pick = index[start : start + 4]
        size_zyx = SCORE_SIZE_XYZ[::-1]
        channels = crops(boxes, pick, crop_offsets(len(pick), rng, size_zyx, False), size_zyx)
        with torch.autocast(channels.device.type, dtype=torch.bfloat16, enabled=use_amp):
            map_ = net(channels, acquisition[pick])
        predicted.append(map_.float().sum(dim=(2, 3, 4)))
    predicted = torch.cat(predicted).cpu()
    target = scores[index].cpu()
    loss = float(log_loss(predicted[..., None, None, None], target).mean())
    pred_cat = [risk_category(float(v)) for v in predicted.sum(1)]
    true_cat = [risk_category(float(v)) for v in target.sum(1)]
    return {
        "n": len(index),
        "loss": loss,
        "category_accuracy": float(np.mean(np.equal(pred_cat, true_cat))),
        "mae_total": float((predicted.sum(1) - target.sum(1)).abs().mean()),
    }


if __name__ == "__main__":
    sys.exit(main())
