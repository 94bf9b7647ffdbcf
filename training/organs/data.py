"""Phantom data for the organ U-Net: generation, resampling to the model grid, sparse sources.

python -m training.organs.data --out DIR [--split train validation test downstream] [--limit N]
                               [--generator 2|3|4]

Each phantom is `models.phantoms.case.generate_case(seed, options=CaseOptions(matrix=128))`
(about 3 x 3 x 1 mm, 1 s per case on one core), resampled to `SPACING_MM` (image: linear, labels:
nearest) and written as `<split>/<seed>.npz` (int16 `image` in HU, uint8 `labels` in
`models.labels.Label` values, `spacing_mm`). Bulky data belongs outside the repository
(/work/organs/data by default in the commands of docs/models/organs.md).

Why 4 mm isotropic: one CPU core trains the network (every step costs about 3 us per input voxel
at width 4), and the valid convolutions cost 88 voxels of context per axis whatever the
spacing; at 4 mm that context is 176 mm, so one 132-voxel window sees most of a chest and a
whole phantom (about 100 x 100 x 40-90 voxels) fits in a handful of windows. The smallest
structures the model is asked for stay resolvable: spinal cord about 10 mm (2-3 voxels), trachea
about 18 mm, sternum 10-15 mm thick.

Seed ranges (disjoint from each other and from the calcium work, which uses 1001.. and 424242):
train 20000-20031 (the base model's 32 phantoms), validation 21000-21003, held-out test
22000-22005, downstream (transfer-learning training pool) 23000-23019.

`--generator 3` or `4` makes the same seeds with the broad variety of generator version 3 (4:
with fat around the heart; docs/phantoms.md) instead of version 2's: other phantoms, so write
them to another folder.

Sparse sources mirror the paper's partially annotated datasets: phantom i of the training split
belongs to source i % 4, and only that source's structures count as annotated.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from models.labels import UNET_CHANNELS, Label

SPACING_MM = (4.0, 4.0, 4.0)  # (z, y, x)
MATRIX = 128
PAD_HU = -1000  # outside the scanned volume: air (clipped to -500 by the network's window)

SPLITS: dict[str, range] = {
    "train": range(20000, 20032),
    "validation": range(21000, 21004),
    "test": range(22000, 22006),
    "downstream": range(23000, 23020),
}

SOURCES: dict[str, tuple[Label, ...]] = {
    "A": (Label.HEART, Label.AORTA),
    "B": (Label.LEFT_LUNG, Label.RIGHT_LUNG, Label.TRACHEA),
    "C": (Label.SPINAL_CORD, Label.STERNUM),
    "D": (Label.LIVER, Label.SPLEEN, Label.STOMACH),
}
"""What each phantom "source" annotates (the rest of its voxels say only "none of these")."""

SPARSE_STRUCTURES: tuple[Label, ...] = tuple(sorted(label for s in SOURCES.values() for label in s))
"""Every structure some source annotates: the base model's trained channels."""


def source_of(index: int) -> str:
    """Source of the training phantom at `index` in its split."""
    return "ABCD"[index % 4]


@dataclass
class Volume:
    seed: int
    image: np.ndarray  # int16 HU (z, y, x) on the model grid
    labels: np.ndarray  # uint8 Label values
    spacing_mm: tuple[float, float, float]

    def annotated(self, mode: str, index: int) -> tuple[Label, ...]:
        """Structures whose voxels are labelled for this sample: the source's for `sparse`,
        all 22 channels for `full` (a channel absent from the phantom is truly absent)."""
        return SOURCES[source_of(index)] if mode == "sparse" else UNET_CHANNELS


def resample(
    image: np.ndarray, labels: np.ndarray, spacing_zyx, target_zyx=SPACING_MM
) -> tuple[np.ndarray, np.ndarray]:
    """Image (linear, after a box average over the axes that shrink by 2x or more) and labels
    (nearest) onto the target spacing."""
    factors = [s / t for s, t in zip(spacing_zyx, target_zyx, strict=True)]
    smooth = [max(1, int(round(1 / f))) if f < 0.5 else 1 for f in factors]
    img = image.astype(np.float32)
    if max(smooth) > 1:
        img = ndimage.uniform_filter(img, size=smooth, mode="nearest")
    img = ndimage.zoom(img, factors, order=1, mode="nearest", grid_mode=True)
    lab = ndimage.zoom(labels, factors, order=0, mode="nearest", grid_mode=True)
    return np.round(img).astype(np.int16), lab.astype(np.uint8)


def make_volume(seed: int, matrix: int = MATRIX, generator: int = 2) -> Volume:
    from models.phantoms.case import CaseOptions, generate_case
    from models.phantoms.variety import variety_for

    case = generate_case(seed, options=CaseOptions(matrix=matrix, variety=variety_for(generator)))
    image, labels = resample(case.image, case.labels, case.spacing_zyx)
    return Volume(seed, image, labels, SPACING_MM)


def save_volume(volume: Volume, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        image=volume.image,
        labels=volume.labels,
        spacing_mm=np.asarray(volume.spacing_mm),
        seed=volume.seed,
    )


def load_volume(path: Path) -> Volume:
    with np.load(path) as f:
        return Volume(
            int(f["seed"]), f["image"], f["labels"], tuple(float(v) for v in f["spacing_mm"])
        )


def load_split(data: Path, split: str, limit: int | None = None) -> list[Volume]:
    """The split's volumes in seed order (the order fixes each training phantom's source)."""
    seeds = list(SPLITS[split])[:limit]
    return [load_volume(Path(data) / split / f"{seed}.npz") for seed in seeds]


DATASET_FILE = "dataset.json"


def record_dataset(out: Path, generator: int, matrix: int) -> None:
    """Write (or check) the folder's record of how its phantoms were made."""
    path = out / DATASET_FILE
    record = {"generator": generator, "matrix": matrix}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != record:
            raise SystemExit(f"{out} holds phantoms made with {stored}, not {record}")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n")


def dataset_generator(data: Path) -> int:
    """The generator version of a data folder (2 for a folder from before the record)."""
    path = Path(data) / DATASET_FILE
    return int(json.loads(path.read_text())["generator"]) if path.exists() else 2


def generate(
    out: Path,
    splits: list[str],
    limit: int | None = None,
    matrix: int = MATRIX,
    generator: int = 2,
) -> dict[str, float]:
    """Write every missing phantom of `splits`; returns seconds per split. The folder's
    `dataset.json` records the generator version (a folder holds one)."""
    record_dataset(Path(out), generator, matrix)
    seconds: dict[str, float] = {}
    for split in splits:
        start = time.perf_counter()
        for seed in tqdm(list(SPLITS[split])[:limit], desc=split, unit="case"):
            path = Path(out) / split / f"{seed}.npz"
            if not path.exists():
                save_volume(make_volume(seed, matrix, generator), path)
        seconds[split] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--limit", type=int, default=None, help="first N seeds of each split")
    parser.add_argument("--matrix", type=int, default=MATRIX)
    parser.add_argument(
        "--generator", type=int, choices=(2, 3, 4), default=2, help="phantom generator version"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for split, s in generate(args.out, args.split, args.limit, args.matrix, args.generator).items():
        print(f"{split}: {s:.1f} s")


if __name__ == "__main__":
    main()
