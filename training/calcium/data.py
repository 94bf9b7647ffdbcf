"""Loading the prepared samples (training/calcium/prepare.py) into memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
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


def sample_paths(folder: Path, limit: int | None = None) -> list[Path]:
    """The finished samples of a folder, in order (the first `limit`)."""
    paths = sorted(Path(folder).glob("sample_*.npz"))
    return [p for p in paths if not p.name.endswith(".tmp.npz")][:limit]


def load_samples(folder: Path, *, with_score_box: bool = True, limit: int | None = None) -> Samples:
    paths = sample_paths(folder, limit)
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


def load_folders(
    folders: list[Path], *, with_score_box: bool = True, limit: int | None = None
) -> Samples:
    """Several folders' samples as one set, in the order given (`limit`: per folder).

    Read one folder at a time into arrays allocated once for the whole set, so that the peak
    is the set plus one folder in flight rather than twice the set: the score boxes and
    registration volumes are 5.8 MB a sample, and four folders of 2,310 samples joined with
    np.concatenate (27 GB at the peak) did not fit in the development machine's 23 GB."""
    folders = list(folders)
    if len(folders) == 1:
        return load_samples(folders[0], with_score_box=with_score_box, limit=limit)
    total = sum(len(sample_paths(folder, limit)) for folder in folders)
    arrays: dict[str, np.ndarray] = {}
    density: list[tuple[np.ndarray, np.ndarray]] = []
    at = 0
    for folder in folders:
        part = load_samples(folder, with_score_box=with_score_box, limit=limit)
        for field in fields(Samples):
            value = getattr(part, field.name)
            if not isinstance(value, np.ndarray):
                continue  # density (a list) and absent score boxes
            if field.name not in arrays:
                arrays[field.name] = np.empty((total, *value.shape[1:]), dtype=value.dtype)
            arrays[field.name][at : at + len(part)] = value
        density.extend(part.density or [])
        at += len(part)
        del part
    score_box = arrays.pop("score_box", None)
    return Samples(**arrays, score_box=score_box, density=density if with_score_box else None)
