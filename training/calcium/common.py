"""Pieces both training commands share: seeding, curves, run records."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def save_curve(
    history: dict[str, list[tuple[int, float]]], path: Path, title: str, ylabel: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in history.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name, marker="o" if len(points) < 30 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_record(args, device, seconds: float, n_train: int, n_validation: int, **extra) -> dict:
    """What a training run writes next to its weights: data sizes, hyperparameters, device,
    time, and whatever the model adds (validation results, history)."""
    return {
        "samples_train": int(n_train),
        "samples_validation": int(n_validation),
        "iterations": args.iterations,
        "batch": args.batch,
        "lr": args.lr,
        "width": args.width,
        "seed": args.seed,
        "device": str(device),
        "seconds": round(seconds, 1),
        **extra,
    }


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
