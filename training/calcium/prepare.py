"""Turn freshly generated phantoms into training samples for the calcium models.

python -m training.calcium.prepare --out DIR --n N --seed S [--workers W] [--generator 1]

`--generator 1` makes the phantoms without the incidental calcifications of generator version
2 (lymph nodes, granulomas, tracheal rings), exactly as version 1 made them from the same seed:
the shipped version 1.0 and the first stage of the candidates in training/calcium/results were
trained on those. `--generator 3` makes them with the broad variety (models/phantoms/variety.py:
wider heart poses and sizes, coronary dominance and courses, lesion shapes and densities, stents,
pacemaker leads, ostial calcium), `--generator 4` with that and fat around the heart.

Per case, one .npz (about 4 MB) with what both models train on, so that the full-size phantom
(tens of MB) never has to be stored:

* `registration`: the whole scan on the 5 mm registration grid (int16 HU), and the heart
  mask on that grid (for building the atlas);
* `heart_centre_mm`, `registration_centre_mm`: where the heart is (centre of its bounds,
  atria and epicardial fat included) and where the registration grid is centred;
* `score_box`: the four score-grid channels (float16) over a box larger than the network's
  crop by the registration jitter used in training, centred on the true heart centre;
* `density_zyx`, `density_artery`, `density_value`: where the score lies, as a sparse map on
  the score box's grid (each counted voxel's share of its artery's score, binned to the
  nearest box voxel, as the candidate-score channel is): the dense target of the score map;
* `scores`: ground-truth Agatston per artery (LAD, LCX, RCA) and `acquisition` features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from models.agatston import voxel_contributions
from models.calcium.networks import ARTERY_CHANNELS, acquisition_features
from models.calcium.preprocess import (
    SCORE_SIZE_XYZ,
    grid_indices,
    physical_centre,
    registration_grid,
    registration_volume,
    score_grid,
    score_input,
)
from models.labels import Label
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.plan import case_plan
from models.phantoms.variety import variety_for

JITTER_VOX = (7, 7, 8)  # +-21 mm in plane, +-20 mm in z: the crop's training jitter
BOX_SIZE_XYZ = tuple(s + 2 * j for s, j in zip(SCORE_SIZE_XYZ, JITTER_VOX, strict=True))


def heart_centre(truth_patient: dict) -> np.ndarray:
    low, high = (np.asarray(b, dtype=float) for b in truth_patient["heart_bounds_mm"])
    return (low + high) / 2


def score_density(case, image: sitk.Image, centre_mm) -> dict[str, np.ndarray]:
    """The truth's voxel contributions binned onto the score box grid around `centre_mm`, the
    same nearest-voxel binning as the candidate-score channel (preprocess.grid_indices)."""
    box = score_grid(centre_mm, BOX_SIZE_XYZ)
    keys, values = [], []
    contributions = voxel_contributions(case.image, case.labels, case.spacing_zyx)
    for artery_index, artery in enumerate(ARTERY_CHANNELS):
        zyx, share = contributions[artery]
        xyz, inside = grid_indices(image, zyx, box)
        keys.append(np.column_stack([np.full(inside.sum(), artery_index), xyz[inside, ::-1]]))
        values.append(share[inside])
    keys, values = np.concatenate(keys), np.concatenate(values)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), values, len(unique))
    return {
        "density_artery": unique[:, 0].astype(np.uint8),
        "density_zyx": unique[:, 1:].astype(np.int16),
        "density_value": summed.astype(np.float32),
    }


def prepare_case(seed: int, category: int, options: CaseOptions | None = None) -> dict:
    case = generate_case(seed, category, options or CaseOptions())
    image = case.grid.to_image(case.image)
    heart = case.grid.to_image((case.labels == Label.HEART).astype(np.uint8))
    reg_heart = sitk.Resample(
        heart, registration_grid(image), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    centre = heart_centre(case.patient)
    acq = case.acquisition
    return {
        "registration": np.clip(np.rint(registration_volume(image)), -1024, 3071).astype(np.int16),
        "registration_heart": (sitk.GetArrayFromImage(reg_heart) * 255).astype(np.uint8),
        "registration_centre_mm": physical_centre(image),
        "heart_centre_mm": centre,
        "score_box": score_input(image, centre, BOX_SIZE_XYZ).astype(np.float16),
        **score_density(case, image, centre),
        "scores": np.array([case.truth.per_artery[a] for a in ARTERY_CHANNELS]),
        "acquisition": np.array(
            acquisition_features(
                acq.slice_increment_mm, acq.slice_thickness_mm, acq.pixel_spacing_mm
            )
        ),
        "seed": np.int64(seed),
    }


def _job(args: tuple) -> dict:
    (index, seed, category), out, options = args
    path = out / f"sample_{index:05d}.npz"
    if not path.exists():  # resumable: a rerun only makes what is missing
        sample = prepare_case(seed, category, options)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **sample)  # uncompressed: writing and loading dominate otherwise
        tmp.rename(path)
    with np.load(path) as sample:
        return {"index": index, "total": float(sample["scores"].sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.calcium.prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, help="stop starting new cases after this")
    parser.add_argument(
        "--generator",
        type=int,
        choices=(1, 2, 3, 4),
        default=2,
        help="phantom generator version (1: without incidental calcifications; 3: the broad "
        "variety; 4: the broad variety with fat around the heart)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    options = CaseOptions(incidental=args.generator >= 2, variety=variety_for(args.generator))
    jobs = [(p, args.out, options) for p in case_plan(args.n, args.seed, args.start)]
    deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
    done = 0
    with (
        ProcessPoolExecutor(args.workers) as pool,
        tqdm(total=len(jobs), desc="samples", unit="case") as bar,
    ):
        pending = {pool.submit(_job, job) for job in jobs[: 2 * args.workers]}
        queue = iter(jobs[2 * args.workers :])
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
                done += 1
                bar.update()
                if deadline is None or time.time() < deadline:
                    job = next(queue, None)
                    if job is not None:
                        pending.add(pool.submit(_job, job))
    print(json.dumps({"samples": done, "planned": len(jobs), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
