"""Choose the coronary region (models/calcium/coronary_region.py) from training phantoms.

python -m training.calcium.coronary_extent --data DIR --score RUN [--weights models/weights]
                                           [--margin-mm 25] [--quantile 1.0] [--limit N]

1. Extent: where the truth's own score lies around the true heart centre, over every prepared
   sample in DIR (the score density of prepare.py; voxels carrying at least 0.05 AU). Per
   axis, the lesion box runs between the signed offsets below which (1 - q) / 2 and
   1 - (1 - q) / 2 of the score lies (weighted by Agatston share; q = --quantile). q = 1.0
   (the default) takes the extreme offsets and holds every voxel; a lower one ignores the
   outermost score, which a few samples place far out.
2. Margin: the region is centred on the *located* heart, so the box grows on every side by
   the error of that location (default 25 mm: the 95th percentile of the registration plus
   heart search under random perturbations, 24.2 mm on 120 unseen phantoms,
   results/heart_search.json).
3. Check: each sample is located as the node locates it (registration ConvNet and heart search
   of --weights on the sample's registration volume), and the report says how much of the
   truth's score would fall outside the region around that located centre (in all, and the
   samples that would lose any).

Writes coronary_region.json into the score run folder; `ship` installs its bounds as the
manifest's `score.coronary_region_mm` and the model card shows the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models.calcium import networks as nets
from models.calcium.coronary_region import inside_region
from models.calcium.inference import WEIGHTS_DIR, CalciumScorer, heart_offset_mm
from models.calcium.preprocess import SCORE_SPACING_MM
from training.calcium.common import write_json
from training.calcium.prepare import BOX_SIZE_XYZ
from training.calcium.train_score import PRESENT_AU

MARGIN_MM = 25.0
REGION_FILE = "coronary_region.json"


def score_offsets(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) z, y, x offsets (mm) from the true heart centre of the voxels carrying score,
    their Agatston shares, the sample's registration volume and its true heart offset."""
    with np.load(path) as sample:
        zyx, value = sample["density_zyx"], sample["density_value"]
        registration = sample["registration"]
        truth = sample["heart_centre_mm"] - sample["registration_centre_mm"]
    centre_zyx = (np.asarray(BOX_SIZE_XYZ[::-1]) - 1) / 2
    keep = value >= PRESENT_AU
    offsets = (zyx[keep] - centre_zyx) * np.asarray(SCORE_SPACING_MM[::-1])
    return offsets, value[keep], registration, truth


def weighted_quantile(values: np.ndarray, weights: np.ndarray, quantile: float) -> float:
    """The smallest value below or at which `quantile` of the total weight lies."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    index = np.searchsorted(cumulative, quantile * cumulative[-1] * (1 - 1e-12))
    return float(values[order][min(index, len(values) - 1)])


def lesion_box(offsets_zyx: np.ndarray, weights: np.ndarray, quantile: float = 1.0):
    """(low, high) x y z mm: per axis, the central `quantile` of the weight of these offsets
    (1.0: from the smallest to the largest offset)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    tail = (1 - quantile) / 2
    low_zyx, high_zyx = [], []
    for offsets in offsets_zyx.T:
        low_zyx.append(weighted_quantile(offsets, weights, tail))
        high_zyx.append(weighted_quantile(offsets, weights, 1 - tail))
    return np.asarray(low_zyx[::-1]), np.asarray(high_zyx[::-1])


@torch.inference_mode()
def location_error_mm(scorer: CalciumScorer, registration: np.ndarray, truth: np.ndarray):
    """Located minus true heart centre (x, y, z, mm), as the node locates it."""
    fine = nets.registration_scale(torch.from_numpy(registration.astype(np.float32)))
    a, t, _, shift_mm, _ = scorer.align_heart(fine.to(scorer.device))
    return np.asarray(heart_offset_mm(a, t, shift_mm)) - truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.coronary_extent")
    parser.add_argument("--data", type=Path, required=True, help="folder of prepared samples")
    parser.add_argument("--score", type=Path, required=True, help="train_score run folder")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="registration used")
    parser.add_argument("--margin-mm", type=float, default=MARGIN_MM)
    parser.add_argument(
        "--quantile", type=float, default=1.0, help="share of the truth's score to hold"
    )
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.data.glob("sample_*.npz") if not p.name.endswith(".tmp.npz"))
    paths = paths[: args.limit]
    if not paths:
        raise SystemExit(f"no sample_*.npz in {args.data}")
    samples = [score_offsets(p) for p in paths]
    scored = [s for s in samples if len(s[1])]
    all_offsets = np.concatenate([s[0] for s in scored])
    all_values = np.concatenate([s[1] for s in scored])
    lesion_low, lesion_high = lesion_box(all_offsets, all_values, args.quantile)
    low, high = lesion_low - args.margin_mm, lesion_high + args.margin_mm

    scorer = CalciumScorer(args.weights, device="cpu", heart_search=True)
    errors, lost, total = [], [], 0.0
    for offsets, value, registration, truth in scored:
        error = location_error_mm(scorer, registration, truth)
        errors.append(float(np.linalg.norm(error)))
        outside = ~inside_region(offsets - error[::-1], low, high)
        lost.append(float(value[outside].sum()))
        total += float(value.sum())
    lost = np.asarray(lost)
    report = {
        "data": f"{len(paths)} samples of {args.data.name} ({len(scored)} with coronary score)",
        "quantile": args.quantile,
        "lesion_low_mm": [round(float(v), 2) for v in lesion_low],
        "lesion_high_mm": [round(float(v), 2) for v in lesion_high],
        "margin_mm": args.margin_mm,
        "low_mm": [round(float(v), 2) for v in low],
        "high_mm": [round(float(v), 2) for v in high],
        "located_error_mm": {
            "median": float(np.median(errors)),
            "p95": float(np.percentile(errors, 95)),
            "max": float(np.max(errors)),
        },
        "truth_outside_au": float(lost.sum()),
        "truth_outside_fraction": float(lost.sum() / max(total, 1e-9)),
        "samples_losing_any": int((lost > 0).sum()),
        "samples_losing_over_1_au": int((lost > 1.0).sum()),
        "registration": scorer.name,
    }
    write_json(args.score / REGION_FILE, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
