"""Train the direct Agatston regression ConvNet (score map per artery).

python -m training.calcium.train_score --data DIR --out DIR [--iterations N] [--seed S]

Each sample's score box is centred on the phantom's true heart centre; every step cuts the
network's crop from it at a random offset of up to +-21 mm in plane and +-20 mm in z, which
stands in for the registration's error, so the network never depends on a perfect alignment.

Loss, per sample:

* the score itself: squared error of log(1 + score) per artery and for the total. Agatston
  scores span five orders of magnitude; on the log scale a miss of 0 vs 5 weighs about as much
  as 400 vs 2000, which is what the risk categories care about;
* plus `--placement-weight` x the placement loss (`placement_loss`) against the truth's own
  score density (each counted voxel's share of the Agatston score, prepare.score_density):
  the map is presence x magnitude per voxel; the presence logits get a class-balanced binary
  cross-entropy against "this voxel carries score", the magnitudes a squared error of their
  logarithm where it does. The network still regresses the score directly (its output is the
  map, its score the map's sum); the placement term tells it where the score lies instead of
  leaving it to find out from totals alone, which makes training converge with far fewer
  samples and makes the map a faithful decision feedback.
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
from models.calcium.networks import ARTERY_CHANNELS, ScoreNet, normalise_score_input
from models.calcium.preprocess import SCORE_SIZE_XYZ
from training.calcium.common import run_record, save_curve, seed_everything, write_json
from training.calcium.data import load_samples, split
from training.calcium.prepare import JITTER_VOX


def crop_offsets(n: int, rng: np.random.Generator, jitter: bool) -> list[tuple[int, int, int]]:
    """(z, y, x) corner of each crop in its score box: random (training) or central."""
    jx, jy, jz = JITTER_VOX
    return [
        tuple(int(rng.integers(0, 2 * j + 1)) if jitter else j for j in (jz, jy, jx))
        for _ in range(n)
    ]


def crops(boxes: torch.Tensor, index: np.ndarray, offsets) -> torch.Tensor:
    """Network crops (B, 3, Z, Y, X) cut from the score boxes; `boxes` stays where it is (on
    the GPU when training there)."""
    sx, sy, sz = SCORE_SIZE_XYZ
    return torch.stack(
        [
            boxes[i, :, z : z + sz, y : y + sy, x : x + sx]
            for i, (z, y, x) in zip(index, offsets, strict=True)
        ]
    ).float()


def density_crops(density, index: np.ndarray, offsets, device) -> torch.Tensor:
    """The score density under each crop on the crop's grid (B, 3, Z, Y, X)."""
    size_zyx = np.asarray(SCORE_SIZE_XYZ[::-1])
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
    presence_logit: torch.Tensor, log_magnitude: torch.Tensor, density: torch.Tensor
) -> torch.Tensor:
    """Where the score lies and how much, against the truth's own score density.

    Presence: class-balanced binary cross-entropy (the mean over voxels that carry score plus
    the mean over those that do not; calcium is about 1 voxel in 1,000, and a plain mean
    would let the score loss, which at first only asks for less everywhere, drown it), x 5.
    Magnitude: squared error of its log on the voxels that carry score (mean)."""
    present = (density >= PRESENT_AU).float()
    absent = 1.0 - present
    bce = F.binary_cross_entropy_with_logits(presence_logit, present, reduction="none")
    dims = (1, 2, 3, 4)
    n_present = present.sum(dim=dims)
    balanced = (bce * present).sum(dim=dims) / n_present.clamp(min=1) + (bce * absent).sum(
        dim=dims
    ) / absent.sum(dim=dims).clamp(min=1)
    target = torch.log(density.clamp(min=PRESENT_AU))
    magnitude_error = (log_magnitude - target) ** 2 * present
    return PRESENCE_WEIGHT * balanced + magnitude_error.sum(dim=dims) / n_present.clamp(min=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.train_score")
    parser.add_argument("--data", type=Path, required=True, help="folder of prepared samples")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int)
    parser.add_argument(
        "--init", type=Path, help="start from these weights (score.pt of an earlier run)"
    )
    parser.add_argument(
        "--placement-weight", type=float, default=1.0, help="weight of the placement loss"
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop early after this much training time"
    )
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data, limit=args.limit)
    train_idx, val_idx = split(len(samples), 0.1, args.seed)
    rng = np.random.default_rng(args.seed)

    net = ScoreNet(width=args.width)
    if args.init is not None:  # a further stage of training (its command is in the card)
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    net = net.to(device)
    boxes = torch.from_numpy(samples.score_box).to(device)  # float16: 3 MB per sample
    acquisition_all = torch.from_numpy(samples.acquisition).to(device)
    scores_all = torch.from_numpy(samples.scores).to(device)
    use_amp = device.type == "cuda"

    def train_step(pick: np.ndarray, optimiser) -> float:
        net.train()
        offsets = crop_offsets(len(pick), rng, jitter=True)
        image = normalise_score_input(crops(boxes, pick, offsets))
        density = density_crops(samples.density, pick, offsets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            map_, presence_logit, log_magnitude = net.forward_factors(image, acquisition_all[pick])
        placement = placement_loss(presence_logit.float(), log_magnitude.float(), density)
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
                        iterations_run=iterations, init=str(args.init) if args.init else None, placement_weight=args.placement_weight,
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
        image = normalise_score_input(crops(boxes, pick, crop_offsets(len(pick), rng, False)))
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=use_amp):
            map_ = net(image, acquisition[pick])
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
