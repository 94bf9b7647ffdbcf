"""Appearance augmentation of score-network training crops (`train_score --appearance`).

Why: every phantom generator draws tissue with its own values (our fat, blood, myocardium and
lung have the HU the generator gives them, and its noise its texture), and a network trained on
one generator learns those values as cues as readily as the anatomy: with the lung next to the
heart turned into fat, version 2.3 counted only 44 % of the LCX and 64 % of the RCA calcium it
had counted before (results/README.md, "Fat around the heart"). Randomising the look of the
context per training crop while keeping the anatomy is the stacked-transformation recipe for
unseen domains (Zhang et al., IEEE TMI 2020: brightness, contrast and noise among others).

What changes: only the mean-HU channel, and only its cells under the calcium threshold, so the
tissue around the candidates, never the candidates. Peak HU, the calcium fraction and the
candidate score (the Agatston definition on the native voxels, which the exact method counts)
are left exactly as they are, and no cell crosses 130 HU in either direction.

* a random monotone piecewise-linear map of sub-threshold HU (contrast and brightness per
  tissue range: lung, fat, water, soft tissue), the same for the whole crop;
* Gaussian noise of a random standard deviation on those cells (the 3 mm cells of another
  generator's or scanner's noise).
"""

from __future__ import annotations

import torch

from models.agatston import CALCIUM_THRESHOLD_HU

CALCIUM_HU = float(CALCIUM_THRESHOLD_HU)

# Control points of the map (HU) and how far each may move (+- HU). The top point stays put so
# that the map ends just under the threshold; lung and air move the most (their values differ
# most between generators and reconstructions), water and soft tissue the least.
CONTROL_HU = (-1000.0, -600.0, -200.0, -50.0, 50.0, CALCIUM_HU)
CONTROL_SPREAD_HU = (100.0, 150.0, 60.0, 40.0, 30.0, 0.0)
MAX_NOISE_SD_HU = 20.0
# Highest value a remapped cell may take: strictly under the threshold.
TOP_HU = CALCIUM_HU - 0.5


def random_tissue_maps(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, points) monotone output values for CONTROL_HU, one map per crop."""
    x = torch.tensor(CONTROL_HU)
    spread = torch.tensor(CONTROL_SPREAD_HU)
    jitter = (2 * torch.rand((n, len(CONTROL_HU)), generator=generator) - 1) * spread
    y = (x + jitter).cummax(dim=1).values  # monotone: tissue order is anatomy, keep it
    return y.clamp(max=TOP_HU)


def piecewise_linear(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Map `values` (any shape) through the piecewise-linear function through (CONTROL_HU, y),
    constant beyond the ends (air below -1000 HU takes the first point's value)."""
    x = torch.tensor(CONTROL_HU, dtype=values.dtype, device=values.device)
    y = y.to(values)
    clamped = values.clamp(x[0], x[-1])
    segment = (torch.bucketize(clamped, x, right=True) - 1).clamp(0, len(x) - 2)
    x0, x1, y0, y1 = x[segment], x[segment + 1], y[segment], y[segment + 1]
    return y0 + (clamped - x0) * (y1 - y0) / (x1 - x0)


def appearance(
    channels: torch.Tensor, generator: torch.Generator, probability: float = 0.8
) -> torch.Tensor:
    """Training crops (B, 4, Z, Y, X) in raw units (preprocess.SCORE_CHANNELS) with each crop's
    sub-threshold mean HU given a random look, with `probability` per crop (the rest pass
    unchanged, so the generator's own look stays in the training mix)."""
    out = channels.clone()
    n = channels.shape[0]
    chosen = torch.rand(n, generator=generator) < probability
    maps = random_tissue_maps(n, generator)
    noise_sd = torch.rand(n, generator=generator) * MAX_NOISE_SD_HU
    for b in torch.nonzero(chosen).flatten().tolist():
        mean_hu = out[b, 0]
        tissue = mean_hu < CALCIUM_HU
        noise = torch.randn(mean_hu.shape, generator=generator).to(mean_hu) * noise_sd[b]
        looked = (piecewise_linear(mean_hu, maps[b]) + noise).clamp(max=TOP_HU)
        out[b, 0] = torch.where(tissue, looked, mean_hu)
    return out
