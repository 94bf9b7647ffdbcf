"""Train the organ U-Net on phantoms with sparse (or, for comparison, full) annotations.

python -m training.organs.train --data DIR --out DIR [--mode sparse|full] [--iterations N]
        [--width 4] [--lr 1e-3] [--seed 0] [--patch Z Y X] [--train-limit N] [--test-limit N]

`--mode sparse`: training phantom i belongs to source i % 4 (training.organs.data.SOURCES) and
only that source's structures are annotated; the loss ignores the rest (the marginal loss in
training.organs.common). `--mode full`: the same phantoms with every structure annotated, i.e.
the same images, samples and steps, only the annotations differ.

Each step takes one crop (batch 1) of `--patch` input voxels (output 88 smaller per axis)
centred, with probability 0.8, on a voxel of a random structure the sample annotates (else
anywhere), so small structures are seen as often as the lungs. Adam, linear warm-up over the
first 10 steps, cosine decay to 5 % of `--lr`; He initialisation rescaled on two training crops
(common.data_dependent_init). Writes to `--out`: `final.pt` (float32, the training input
convention), `checkpoint.pt` every 25 steps, `curve.png`, and `run.json` (arguments, seconds,
loss history, Dice per structure on the held-out test phantoms).

`--init FILE` continues from earlier weights (common.load_training_weights) instead of the
data-dependent initialisation, with a fresh optimiser and learning-rate schedule; run.json then
records the file and its sha256, so that `training.organs.ship --init-run` can name both stages.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.files import sha256
from models.labels import UNET_CHANNELS, Label
from models.organs.unet import UNet3D
from training.organs.common import (
    N_CLASSES,
    annotated_mask,
    channel_lut,
    crop_at,
    data_dependent_init,
    dice,
    load_training_weights,
    make_net,
    postprocess,
    predict_probs,
    sample_centre,
    save_curve,
    seed_everything,
    smooth,
    sparse_label_loss,
    to_input,
    write_json,
)
from training.organs.data import (
    SOURCES,
    SPARSE_STRUCTURES,
    Volume,
    dataset_generator,
    load_split,
    source_of,
)

DEFAULT_PATCH = (108, 116, 116)  # output 20 x 28 x 28 voxels = 80 x 112 x 112 mm at 4 mm


def lr_at(step: int, iterations: int, lr: float, warmup: int = 10) -> float:
    if step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / max(1, iterations - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate(net: UNet3D, volumes: list[Volume], structures=SPARSE_STRUCTURES) -> dict:
    """Dice per structure (mean over the volumes that contain it) on whole volumes."""
    label_values = [int(c) for c in UNET_CHANNELS]
    per: dict[str, list[float]] = {s.name.lower(): [] for s in structures}
    for vol in volumes:
        pred = postprocess(predict_probs(net, vol.image), label_values)
        for s in structures:
            if (vol.labels == s).any():
                per[s.name.lower()].append(dice(pred == s, vol.labels == s))
    table = {k: round(float(np.mean(v)), 4) for k, v in per.items() if v}
    table["mean"] = round(float(np.mean(list(table.values()))), 4)
    return table


def train(args: argparse.Namespace) -> dict:
    # One thread unless asked (the CPU is shared; --threads N on a machine the run has alone).
    torch.set_num_threads(getattr(args, "threads", 1))
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volumes = load_split(args.data, "train", args.train_limit)
    samples = []
    for i, vol in enumerate(volumes):
        if args.mode == "sparse":
            annotated: tuple[Label, ...] = SOURCES[source_of(i)]
        else:
            annotated = UNET_CHANNELS
        focus = tuple(s for s in annotated if s in SPARSE_STRUCTURES)
        samples.append((vol, focus, channel_lut(annotated), annotated_mask(annotated)))
    net = make_net(N_CLASSES, args.width, args.seed)
    if args.init is not None:
        net.load_state_dict(load_training_weights(args.init))
    else:
        calibration = []
        for vol, focus, _, _ in samples[:2]:
            centre = sample_centre(vol.labels, focus, rng)
            calibration.append(to_input(crop_at(vol.image, vol.labels, centre, args.patch)[0]))
        data_dependent_init(net, torch.from_numpy(np.stack(calibration))[:, None])
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    history: list[tuple[int, float]] = []
    start = time.perf_counter()
    progress = tqdm(range(1, args.iterations + 1), desc=f"organs {args.mode}", unit="it")
    for step in progress:
        net.train()
        vol, focus, lut, mask = samples[rng.integers(len(samples))]
        centre = sample_centre(vol.labels, focus, rng)
        image, target = crop_at(vol.image, vol.labels, centre, args.patch)
        x = torch.from_numpy(to_input(image))[None, None]
        t = torch.from_numpy(lut[target])[None]
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, args.iterations, args.lr)
        loss, parts = sparse_label_loss(net.logits(x), t, mask[None].clone())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append((step, float(loss.detach())))
        progress.set_postfix(loss=f"{history[-1][1]:.3f}", dice=f"{parts['dice']:.2f}")
        if step % 25 == 0 or step == args.iterations:
            torch.save(
                {"step": step, "net": net.state_dict(), "optimiser": optimiser.state_dict()},
                out / "checkpoint.pt",
            )
    seconds = time.perf_counter() - start
    torch.save(net.state_dict(), out / "final.pt")
    save_curve(
        {"loss": history, "running mean (10)": smooth(history)},
        out / "curve.png",
        f"organ U-Net, {args.mode} labels, width {args.width}",
    )
    record = {
        "mode": args.mode,
        "iterations": args.iterations,
        "width": args.width,
        "lr": args.lr,
        "seed": args.seed,
        "patch": list(args.patch),
        "data_generator": dataset_generator(args.data),
        "threads": torch.get_num_threads(),
        "train_phantoms": len(volumes),
        "train_seeds": [v.seed for v in volumes],
        "sources": {k: [s.name.lower() for s in v] for k, v in SOURCES.items()},
        "seconds_train": round(seconds, 1),
        "history": history,
    }
    if args.init is not None:
        record["init"] = {"path": str(args.init), "sha256": sha256(args.init)}
    if args.test_limit != 0:
        test = load_split(args.data, "test", args.test_limit)
        start = time.perf_counter()
        record["test_dice"] = evaluate(net, test)
        record["test_seeds"] = [v.seed for v in test]
        record["seconds_test"] = round(time.perf_counter() - start, 1)
    write_json(out / "run.json", record)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=("sparse", "full"), default="sparse")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch", type=int, nargs=3, default=DEFAULT_PATCH)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: the CPU is shared)"
    )
    parser.add_argument("--train-limit", type=int, default=None, help="first N train phantoms")
    parser.add_argument("--test-limit", type=int, default=None, help="0: no test evaluation")
    parser.add_argument(
        "--init", type=Path, default=None,
        help="start from these weights: a run's final.pt or checkpoint.pt, or a shipped .pt/.json",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    record = train(parse_args(argv))
    print(f"{record['mode']}: {record['seconds_train']} s; test Dice {record.get('test_dice')}")


if __name__ == "__main__":
    main()
