"""python -m training.phantoms_alt --out DIR --n N --seed S [--dicom] [--fov] [--contrast]

Writes DIR/case_NNNNN/ (image.nii.gz, labels.nii.gz, truth.json, dicom/ with --dicom) for N
cases balanced over the five risk categories; --fov adds case_NNNNN_fov/ (the cardiac field of
view as a sub-array) and case_NNNNN_fov512/ (resampled to 512 x 512); --contrast adds
case_NNNNN_contrast/ (blood pool 200-450 HU; with --fov also case_NNNNN_fov_contrast/).
Evaluation only: never train on these.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from training.phantoms_alt.case import AltOptions, generate_case
from training.phantoms_alt.output import plan, write_case
from training.phantoms_alt.variants import contrast_variant, fov_crop, fov_resampled


def _make(job) -> dict:
    (index, seed, category), args = job
    case = generate_case(seed, category, AltOptions(matrix=args.matrix, contrast=args.contrast))
    name = f"case_{index:05d}"
    made = [(name, case)]
    if args.fov:
        made += [(f"{name}_fov", fov_crop(case)), (f"{name}_fov512", fov_resampled(case))]
    if args.contrast:
        made.append((f"{name}_contrast", contrast_variant(case)))
        if args.fov:
            made.append((f"{name}_fov_contrast", contrast_variant(fov_crop(case))))
    for folder, variant in made:
        write_case(variant, args.out / folder, args.dicom, args.contrast_header)
    return {"case": name, "seed": seed, "target_category": category,
            "category": case.truth.category, "agatston": round(case.truth.total, 2),
            "seconds": round(case.seconds, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.phantoms_alt", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2525)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--dicom", action="store_true", help="also write a DICOM series")
    parser.add_argument("--fov", action="store_true", help="also write cardiac-FOV variants")
    parser.add_argument("--contrast", action="store_true", help="also write the contrast variant")
    parser.add_argument(
        "--contrast-header",
        action="store_true",
        help="name the contrast agent in the contrast variant's DICOM header",
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    jobs = [(job, args) for job in plan(args.n, args.seed)]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(_make, jobs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cases.json").write_text(json.dumps(rows, indent=1) + "\n")
    hits = sum(r["category"] == r["target_category"] for r in rows)
    print(f"{len(rows)} cases in {args.out}; {hits} in their target category")
    return 0


if __name__ == "__main__":
    sys.exit(main())
