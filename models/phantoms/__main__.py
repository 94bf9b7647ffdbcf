"""python -m models.phantoms --out DIR --n N --seed S [--dicom]: generate phantom cases."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.plan import case_plan
from models.phantoms.variety import variety_for
from models.phantoms.writer import write_case


def _make(job: tuple) -> dict:
    (index, case_seed, category), out, options, dicom, rle = job
    case = generate_case(case_seed, category, options)
    write_case(case, out / f"case_{index:04d}", dicom=dicom, rle=rle)
    return {"case": index, "category": case.truth.category, "total": case.truth.total}


def parse_protocol(text: str) -> tuple[float, float]:
    thickness, increment = (float(v) for v in text.split("/"))
    return thickness, increment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.phantoms", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (case_NNNN inside)")
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--seed", type=int, required=True, help="master seed (reproducible)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--dicom", action="store_true", help="also write a DICOM CT series")
    parser.add_argument("--rle", action="store_true", help="write the DICOM series as RLE Lossless")
    parser.add_argument("--matrix", type=int, default=512, help="image matrix (512 as scanners)")
    parser.add_argument(
        "--protocol", type=parse_protocol, help="THICKNESS/INCREMENT in mm, e.g. 3/1.5"
    )
    parser.add_argument("--slices", type=int, help="fixed number of slices (default: 150-350 mm)")
    parser.add_argument(
        "--contrast",
        type=float,
        metavar="HU",
        help="contrast-enhanced: blood pool at HU (e.g. 300); default unenhanced",
    )
    parser.add_argument(
        "--broad",
        action="store_true",
        help="generator version 3: the broad variety (variety.py); default version 2",
    )
    parser.add_argument(
        "--heart-fat",
        action="store_true",
        help="generator version 4: the broad variety with fat around the heart (variety.py)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    args = parser.parse_args(argv)

    options = CaseOptions(
        matrix=args.matrix,
        protocol=args.protocol,
        n_slices=args.slices,
        contrast_hu=args.contrast,
        variety=variety_for(4 if args.heart_fat else 3 if args.broad else 2),
    )
    jobs = [
        (p, args.out, options, args.dicom, args.rle)
        for p in case_plan(args.n, args.seed, args.start)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(
                tqdm(pool.map(_make, jobs), total=len(jobs), desc="phantoms", unit="case")
            )
    else:
        results = [_make(job) for job in tqdm(jobs, desc="phantoms", unit="case")]
    counts = Counter(r["category"] for r in results)
    summary = {"cases": len(results), "per_category": {str(k): counts.get(k, 0) for k in range(5)}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
