"""The organ model's Dice on both phantom styles (issue 25.7: a model good on one style only is
overfit).

python -m training.organs.evaluate_styles [--spec models/weights/organs_base.json]
    [--n-own 20] [--n-alt 20] [--own-generator 2|3|4] [--matrix 128] [--workers 2] [--out DIR]

own: `models.phantoms` cases (generator version 2, the style the model trained on) of seeds
     22000 on (`training/organs/data.py`: the held-out test split is 22000-22005; the seeds
     after it are used by nothing else); `--own-generator 4` makes the same seeds with the broad
     variety and fat around the heart (the held-out test split of `data --generator 4`).
alt: `training.phantoms_alt` cases (evaluation only, the plan of seed 2525 that the calcium
     evaluation uses), stored as their DICOM writer stores them (head-first or feet-first).
Both at `--matrix` (128: about 3 mm pixels, what the organ model's 4 mm grid needs). Each case
goes through `models.organs.inference.OrganSegmenter`, the node's path, and the Dice of each
structure is computed on the CT grid against the generator's labels (a structure absent from
both counts as nothing). Writes OUT/styles.json (per case and the mean per structure and style)
and OUT/styles.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.labels import Label
from training.organs.common import dice, one_thread

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "models" / "weights" / "organs_base.json"
OWN_FIRST_SEED = 22000
ALT_SEED = 2525  # training/calcium/evaluate_styles.py
STRUCTURES = (Label.HEART, Label.AORTA, Label.LEFT_LUNG, Label.RIGHT_LUNG, Label.TRACHEA)

_segmenter = None


def _init(spec: str) -> None:
    global _segmenter
    one_thread()
    from models.organs.inference import OrganSegmenter

    _segmenter = OrganSegmenter(Path(spec), device="cpu")


def case_image(
    style: str, seed: int, category: int, matrix: int, generator: int = 2
) -> tuple[sitk.Image, np.ndarray]:
    """The CT and its labels as a SimpleITK image pair's arrays: (image, labels on its grid)."""
    if style == "own":
        from models.phantoms.case import CaseOptions, generate_case
        from models.phantoms.variety import variety_for

        options = CaseOptions(matrix=matrix, variety=variety_for(generator))
        case = generate_case(seed, category, options)
        return case.grid.to_image(case.image), case.labels
    from training.phantoms_alt.case import AltOptions, generate_case
    from training.phantoms_alt.grid import oriented, to_image

    case = generate_case(seed, category, AltOptions(matrix=matrix))
    position = case.acquisition.position
    return to_image(case.image, case.grid, position), np.ascontiguousarray(
        oriented(case.labels, position)
    )


def _job(job: dict) -> dict:
    image, truth = case_image(
        job["style"], job["seed"], job["category"], job["matrix"], job.get("generator", 2)
    )
    start = time.perf_counter()
    result = _segmenter.segment(image)
    seconds = time.perf_counter() - start
    predicted = sitk.GetArrayFromImage(result.labels)
    scores = {}
    for structure in STRUCTURES:
        p, t = predicted == structure, truth == structure
        if p.any() or t.any():
            scores[structure.name.lower()] = round(dice(p, t), 4)
    return {**job, "dice": scores, "seconds": round(seconds, 2)}


def plan(n_own: int, n_alt: int, matrix: int, own_generator: int = 2) -> list[dict]:
    jobs = [{"style": "own", "seed": OWN_FIRST_SEED + i, "category": i % 5, "matrix": matrix,
             "generator": own_generator} for i in range(n_own)]  # fmt: skip
    if n_alt:
        from training.phantoms_alt.output import plan as alt_plan

        jobs += [{"style": "alt", "seed": s, "category": c, "matrix": matrix}
                 for _, s, c in alt_plan(n_alt, ALT_SEED)]  # fmt: skip
    return jobs


def summarise(rows: list[dict]) -> dict:
    out = {}
    for style in ("own", "alt"):
        mine = [r for r in rows if r["style"] == style]
        if not mine:
            continue
        per = {}
        for structure in STRUCTURES:
            name = structure.name.lower()
            values = [r["dice"][name] for r in mine if name in r["dice"]]
            if values:
                per[name] = {
                    "mean": round(statistics.mean(values), 3),
                    "median": round(statistics.median(values), 3),
                    "min": round(min(values), 3),
                    "n": len(values),
                }
        out[style] = {"n": len(mine), "dice": per}
    return out


def markdown(summary: dict, spec: Path) -> str:
    names = [s.name.lower() for s in STRUCTURES]
    lines = [
        f"# Organ model `{spec.stem}` on both phantom styles",
        "",
        "Mean Dice per structure (median, minimum), generator labels as the reference.",
        "",
        "| style | n | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for style, figures in summary.items():
        cells = []
        for name in names:
            d = figures["dice"].get(name)
            cells.append(
                "-" if d is None else f"{d['mean']:.2f} ({d['median']:.2f}, {d['min']:.2f})"
            )
        lines.append(f"| {style} | {figures['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.organs.evaluate_styles")
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--n-own", type=int, default=20)
    parser.add_argument("--n-alt", type=int, default=20)
    parser.add_argument("--own-generator", type=int, choices=(2, 3, 4), default=2)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "training/organs/results/styles")
    args = parser.parse_args(argv)

    jobs = plan(args.n_own, args.n_alt, args.matrix, args.own_generator)
    started = time.time()
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(str(args.spec),)) as pool:
        rows = list(pool.map(_job, jobs))
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "spec": str(args.spec.relative_to(REPO) if args.spec.is_relative_to(REPO) else args.spec),
        "own_generator": args.own_generator,
        "summary": summary,
        "machine": f"{platform.machine()}, {args.workers} worker(s), CPU",
        "seconds_total": round(time.time() - started, 1),
        "cases": rows,
    }
    (args.out / "styles.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "styles.md").write_text(markdown(summary, args.spec))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
