"""Transfer-learning study: the sparse base model on structures it never saw.

python -m training.organs.transfer --data DIR --base FILE --out DIR
        [--tasks vertebrae esophagus] [--sizes 2 5 10 20] [--modes scratch all finetune]
        [--seeds 0 1] [--steps 24] [--lr 2e-3] [--lr-finetune 1e-2]
        [--report-only | --merge DIR ...]

`--base`: the base model's `final.pt` (training.organs.train; centred, scaled input) or a
shipped spec `.json` (its float16 weights take clipped HU and are converted back).

For every task (one new structure + background, 2 output channels), training-set size n, seed
and mode a 2-class network is trained for the same `--steps` steps (batch 1, Adam with 2 warm-up
steps and cosine decay; `--lr` for the modes that train every weight, `--lr-finetune` for the
few fine-tuned layers, whose features are fixed) on crops from n phantoms of the downstream pool
(training.organs.data seeds 23000-23019; the subset of n is drawn per seed):

* `scratch`: He initialisation rescaled on the first training crop (common.data_dependent_init),
  every weight trained;
* `all`: every layer initialised from the base, every weight trained;
* `finetune`: initialised from the base, only `UNet3D.fine_tune_layers()` trained (the paper's:
  the last 3x3x3 convolution and the 1x1x1 head); the frozen part is computed once per crop.

Changing the number of classes keeps the LAST 2 pretrained head channels (REFERENCE.md 1.B:
background stays last), so the new structure starts from the base's trachea channel.

Crops: each downstream phantom contributes `--crops-per-phantom` fixed crops of `--patch`
input voxels centred on voxels of the task's structure (drawn with the phantom's seed); every
mode of one (size, seed) draws the same crop sequence. Evaluation: Dice of (p > 0.5) in one crop
of `--test-patch` input voxels per held-out test phantom (seeds 22000-22005), centred on the
structure's centroid, averaged over the phantoms. Results accumulate in `results.json`
(a rerun skips finished runs); `transfer_table.md` and `transfer.png` summarise them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.labels import Label
from models.organs.unet import UNet3D
from training.organs.common import (
    IGNORE,
    N_CLASSES,
    crop_at,
    data_dependent_init,
    dice,
    load_training_weights,
    make_net,
    one_thread,
    sample_centre,
    seed_everything,
    sparse_label_loss,
    to_input,
    write_json,
)
from training.organs.data import Volume, load_split
from training.organs.train import lr_at

MODES = ("scratch", "all", "finetune")
MODE_NAMES = {
    "scratch": "from scratch",
    "all": "transfer, all weights updated",
    "finetune": "transfer, fine-tune last conv + head",
}


def transferred(base: dict[str, torch.Tensor], width: int, n_classes: int = 2) -> UNet3D:
    """A network with `n_classes` outputs initialised from the base; the head keeps the base's
    last `n_classes` channels (background last)."""
    net = UNet3D(n_classes=n_classes, width=width)
    state = dict(base)
    state["head.weight"] = base["head.weight"][-n_classes:].clone()
    state["head.bias"] = base["head.bias"][-n_classes:].clone()
    net.load_state_dict(state)
    return net


def frozen_features(net: UNet3D, x: torch.Tensor) -> torch.Tensor:
    """Everything before `dec1b` (the part fine-tuning freezes), as in UNet3D.logits."""
    from models.organs.unet import _centre_crop

    skip1 = F.relu(net.enc1b(F.relu(net.enc1a(x))))
    skip2 = F.relu(net.enc2b(F.relu(net.enc2a(F.max_pool3d(skip1, 2)))))
    skip3 = F.relu(net.enc3b(F.relu(net.enc3a(F.max_pool3d(skip2, 2)))))
    h = F.relu(net.bottom_b(F.relu(net.bottom_a(F.max_pool3d(skip3, 2)))))
    for skip, conv_a, conv_b in ((skip3, net.dec3a, net.dec3b), (skip2, net.dec2a, net.dec2b)):
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = torch.cat([h, _centre_crop(skip, h)], dim=1)
        h = F.relu(conv_b(F.relu(conv_a(h))))
    h = F.interpolate(h, scale_factor=2, mode="nearest")
    h = torch.cat([h, _centre_crop(skip1, h)], dim=1)
    return F.relu(net.dec1a(h))


def head_logits(net: UNet3D, features: torch.Tensor) -> torch.Tensor:
    return net.head(F.relu(net.dec1b(features)))


def task_crops(
    volumes: list[Volume], task: Label, patch, per_phantom: int, centroid: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scaled input, target: 0 structure / 1 background / 255 outside) crops per volume."""
    crops = []
    for vol in volumes:
        if not (vol.labels == task).any():
            continue
        rng = np.random.default_rng(vol.seed * 100 + int(task))
        if centroid:
            where = np.argwhere(vol.labels == task)
            centres = [tuple(int(round(v)) for v in where.mean(axis=0))]
        else:
            centres = [sample_centre(vol.labels, (task,), rng, 1.0) for _ in range(per_phantom)]
        for centre in centres:
            image, labels = crop_at(vol.image, vol.labels, centre, patch)
            target = np.where(labels == IGNORE, IGNORE, np.where(labels == task, 0, 1))
            crops.append((to_input(image), target.astype(np.int64)))
    return crops


def crop_dice(logits: torch.Tensor, target: np.ndarray) -> float:
    probs = torch.softmax(logits, dim=1)[0, 0].numpy()
    valid = target != IGNORE
    return dice((probs > 0.5) & valid, (target == 0) & valid)


def fit(
    mode: str,
    base: dict[str, torch.Tensor],
    train_crops: list,
    train_feats: list | None,
    args: argparse.Namespace,
    seed: int,
) -> tuple[UNet3D, list[float], float]:
    """Train one 2-class network in `mode`; returns it, the losses and the seconds."""
    seed_everything(seed)
    if mode == "scratch":
        net = make_net(2, args.width, seed)
        data_dependent_init(net, torch.from_numpy(train_crops[0][0])[None, None])
    else:
        net = transferred(base, args.width)
    params = (
        [p for layer in net.fine_tune_layers() for p in layer.parameters()]
        if mode == "finetune"
        else list(net.parameters())
    )
    lr = args.lr_finetune if mode == "finetune" else args.lr
    optimiser = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)  # the same crop sequence for every mode
    mask = torch.ones(1, 2, dtype=torch.bool)
    losses = []
    start = time.perf_counter()
    net.train()
    for step in range(1, args.steps + 1):
        i = int(rng.integers(len(train_crops)))
        target = torch.from_numpy(train_crops[i][1])[None]
        if mode == "finetune":
            logits = head_logits(net, train_feats[i])
        else:
            logits = net.logits(torch.from_numpy(train_crops[i][0])[None, None])
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, args.steps, lr, warmup=2)
        loss, _ = sparse_label_loss(logits, target, mask.clone())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(round(float(loss.detach()), 4))
    return net, losses, time.perf_counter() - start


def run_one(
    mode: str,
    base: dict[str, torch.Tensor],
    train_crops: list,
    test_crops: list,
    train_feats: list | None,
    test_feats: list | None,
    args: argparse.Namespace,
    seed: int,
) -> dict:
    net, losses, seconds = fit(mode, base, train_crops, train_feats, args, seed)
    net.eval()
    with torch.no_grad():
        dices = [
            crop_dice(
                head_logits(net, test_feats[j])
                if mode == "finetune"
                else net.logits(torch.from_numpy(image)[None, None]),
                target,
            )
            for j, (image, target) in enumerate(test_crops)
        ]
    return {"losses": losses, "dice": round(float(np.mean(dices)), 4), "seconds": round(seconds, 1)}


def study(args: argparse.Namespace) -> list[dict]:
    one_thread()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["task"], r["size"], r["seed"], r["mode"], r.get("lr")) for r in results}
    base = load_training_weights(args.base)
    base_net = UNet3D(n_classes=N_CLASSES, width=args.width)
    base_net.load_state_dict(base)
    base_net.eval()
    pool = load_split(args.data, "downstream", args.pool_limit)
    test = load_split(args.data, "test", args.test_limit)
    for task_name in args.tasks:
        task = Label[task_name.upper()]
        per_phantom = task_crops(pool, task, args.patch, args.crops_per_phantom)
        per_phantom = [
            per_phantom[k : k + args.crops_per_phantom]
            for k in range(0, len(per_phantom), args.crops_per_phantom)
        ]
        test_crops = task_crops(test, task, args.test_patch, 1, centroid=True)
        feats: dict = {}
        with torch.no_grad():  # the frozen part of fine-tuning, once per crop
            all_train = [c for group in per_phantom for c in group]
            for key, crops in (("train", all_train), ("test", test_crops)):
                feats[key] = [
                    frozen_features(base_net, torch.from_numpy(image)[None, None])
                    for image, _ in crops
                ]
        runs = [(size, seed) for seed in args.seeds for size in args.sizes]
        for size, seed in tqdm(runs, desc=f"transfer {task_name}", unit="run"):
            chosen = np.random.default_rng(1000 + seed).permutation(len(per_phantom))[:size]
            index = [
                k * args.crops_per_phantom + c
                for k in sorted(chosen)
                for c in range(len(per_phantom[k]))
            ]
            train_crops = [all_train[i] for i in index]
            train_feats = [feats["train"][i] for i in index]
            for mode in args.modes:
                lr = args.lr_finetune if mode == "finetune" else args.lr
                if (task_name, size, seed, mode, lr) in done:
                    continue
                record = run_one(
                    mode, base, train_crops, test_crops, train_feats, feats["test"], args, seed
                )
                record.update(
                    task=task_name, size=size, seed=seed, mode=mode, lr=lr, steps=args.steps
                )
                results.append(record)
                write_json(results_path, results)
    return results


def summarise(results: list[dict]) -> dict:
    """task -> (mode, lr) -> size -> (mean, sd, n) of the Dice over seeds.

    Rows follow MODES, then the larger learning rate first; lr is None for records that did not
    store it."""
    table: dict = {}
    for r in results:
        row = (r["mode"], r.get("lr"))
        table.setdefault(r["task"], {}).setdefault(row, {}).setdefault(r["size"], [])
        table[r["task"]][row][r["size"]].append(r["dice"])

    def order(row: tuple[str, float | None]) -> tuple[int, float]:
        return MODES.index(row[0]), -(row[1] or 0.0)

    return {
        task: {
            row: {
                size: (float(np.mean(v)), float(np.std(v)), len(v))
                for size, v in sorted(modes[row].items())
            }
            for row in sorted(modes, key=order)
        }
        for task, modes in table.items()
    }


def row_name(row: tuple[str, float | None]) -> str:
    mode, lr = row
    return MODE_NAMES[mode] if lr is None else f"{MODE_NAMES[mode]}, lr {lr:g}"


def markdown_table(summary: dict) -> str:
    sizes = sorted({s for modes in summary.values() for m in modes.values() for s in m})
    lines = [
        "| task | mode | " + " | ".join(f"n = {s}" for s in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for task, rows in summary.items():
        for row, by_size in rows.items():
            cells = []
            for s in sizes:
                if s in by_size:
                    mean, sd, n = by_size[s]
                    cells.append(f"{mean:.3f} ± {sd:.3f}")
                else:
                    cells.append("")
            lines.append(f"| {task} | {row_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(5.5 * len(summary), 5.5), dpi=100)
    axes = np.atleast_1d(axes)
    colours = dict(zip(MODES, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, (task, rows) in zip(axes, summary.items(), strict=True):
        seen: set[str] = set()
        for row, by_size in rows.items():
            sizes = list(by_size)
            mean = [by_size[s][0] for s in sizes]
            sd = [by_size[s][1] for s in sizes]
            # The first (larger) learning rate of a mode solid, a further one dashed.
            style = "--" if row[0] in seen else "-"
            seen.add(row[0])
            ax.errorbar(sizes, mean, yerr=sd, marker="o", capsize=3, linestyle=style,
                        color=colours[row[0]], label=row_name(row))  # fmt: skip
        ax.set_xscale("log")
        ax.minorticks_off()  # log-scale minor labels (3x10^0 ...) would crowd the sizes
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("training phantoms")
        ax.set_ylabel("test Dice")
        ax.set_ylim(0, 1)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below the data
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(out: Path) -> str:
    results = json.loads((Path(out) / "results.json").read_text())
    summary = summarise(results)
    table = markdown_table(summary)
    (Path(out) / "transfer_table.md").write_text(table)
    plot(summary, Path(out) / "transfer.png")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=["vertebrae", "esophagus"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--lr", type=float, default=2e-3, help="scratch and all")
    parser.add_argument("--lr-finetune", type=float, default=1e-2)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--patch", type=int, nargs=3, default=(100, 100, 100))
    parser.add_argument("--test-patch", type=int, nargs=3, default=(108, 124, 124))
    parser.add_argument("--crops-per-phantom", type=int, default=2)
    parser.add_argument("--pool-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="report: results.json of these runs"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merged = [r for d in args.merge for r in json.loads((d / "results.json").read_text())]
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "results.json", merged)
    elif not args.report_only:
        study(args)
    print(report(args.out))


if __name__ == "__main__":
    main()
