"""Loading the prepared samples (training/calcium/prepare.py) into memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Samples:
    registration: np.ndarray  # (N, 80, 80, 80) int16 HU
    registration_heart: np.ndarray  # (N, 80, 80, 80) uint8, heart probability x 255
    heart_offset_mm: np.ndarray  # (N, 3) heart centre minus registration-grid centre (x, y, z)
    score_box: np.ndarray | None  # (N, 3, Z, Y, X) float16 score-grid channels
    scores: np.ndarray  # (N, 3) LAD, LCX, RCA
    acquisition: np.ndarray  # (N, 3)
    seeds: np.ndarray
    # Per sample, the sparse score density on the score box grid: (artery, z, y, x) rows and
    # their Agatston shares (prepare.score_density); None when loaded without score boxes.
    density: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, index: np.ndarray) -> Samples:
        return Samples(
            self.registration[index],
            self.registration_heart[index],
            self.heart_offset_mm[index],
            None if self.score_box is None else self.score_box[index],
            self.scores[index],
            self.acquisition[index],
            self.seeds[index],
            None if self.density is None else [self.density[i] for i in index],
        )


def load_samples(folder: Path, *, with_score_box: bool = True, limit: int | None = None) -> Samples:
    paths = sorted(Path(folder).glob("sample_*.npz"))
    paths = [p for p in paths if not p.name.endswith(".tmp.npz")][:limit]
    if not paths:
        raise FileNotFoundError(f"no sample_*.npz in {folder}")
    keys = [
        "registration",
        "registration_heart",
        "scores",
        "acquisition",
        "seed",
        "heart_centre_mm",
        "registration_centre_mm",
    ]
    if with_score_box:
        keys += ["score_box", "density_artery", "density_zyx", "density_value"]

    def read(path: Path) -> dict:
        with np.load(path) as sample:
            return {k: sample[k] for k in keys}

    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(read, paths))
    stack = lambda k: np.stack([s[k] for s in loaded])  # noqa: E731
    return Samples(
        registration=stack("registration"),
        registration_heart=stack("registration_heart"),
        heart_offset_mm=stack("heart_centre_mm") - stack("registration_centre_mm"),
        score_box=stack("score_box") if with_score_box else None,
        scores=stack("scores").astype(np.float32),
        acquisition=stack("acquisition").astype(np.float32),
        seeds=stack("seed"),
        density=[
            (
                np.column_stack([s["density_artery"], s["density_zyx"]]).astype(np.int64),
                s["density_value"].astype(np.float32),
            )
            for s in loaded
        ]
        if with_score_box
        else None,
    )


def split(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * validation_fraction))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def concatenate(parts: list[Samples]) -> Samples:
    """Several folders' samples as one set (in the order given)."""
    if len(parts) == 1:
        return parts[0]
    joined = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    with_boxes = all(p.score_box is not None for p in parts)
    return Samples(
        registration=joined("registration"),
        registration_heart=joined("registration_heart"),
        heart_offset_mm=joined("heart_offset_mm"),
        score_box=joined("score_box") if with_boxes else None,
        scores=joined("scores"),
        acquisition=joined("acquisition"),
        seeds=joined("seeds"),
        density=[d for p in parts for d in p.density] if with_boxes else None,
    )
