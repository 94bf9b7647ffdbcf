"""Where two installed calcium models put the heart, on the same fresh phantoms.

python -m training.calcium.locate_compare --weights DIR [DIR ...] [--generator 2 4] [--n 60]
                                          [--seed 7373] [--alt] [--workers 2] [--out FILE.json]

Each phantom (`case_plan(n, seed)`, made by the given generator versions: 2 the default
variety, 3 the broad variety, 4 broad with fat around the heart) is located by every model as
`ctnode score` locates it (registration ConvNet, then the heart search where the manifest turns
it on), and the distance from the phantom's true heart centre (the middle of its heart's
bounding box, prepare.heart_centre) is recorded, with the registration's atlas correlation
(what the `registration_failure` flag reads). Per model and generator: median, 95th percentile
and maximum error and the share within 21 mm (the score network's training jitter).

`--alt` adds the second phantom style's cases of the same plan seed (training/phantoms_alt,
their true heart centre as that generator records it) as the set "alt": evaluation only, to
see whether a registration that places our phantoms' hearts better also does so on anatomy
it was not shaped by.

For choosing a registration: use a seed that no final evaluation uses (424242 is the held-out
evaluation's, 2525 the second style's), and write the decision rule down before running it.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from models.phantoms.plan import case_plan

_scorers: list = []


def _init(weights: list[str]) -> None:
    import torch

    from models.calcium.inference import CalciumScorer

    torch.set_num_threads(1)  # one model set per worker process, loaded once
    _scorers.extend(CalciumScorer(Path(w), device="cpu", method="exact") for w in weights)


def _job(job: tuple[int | str, int, int, int]) -> dict:
    from training.calcium.where_lost import style_case

    generator, index, seed, category = job
    if generator == "alt":
        ct, _, truth = style_case("alt", seed, category)
    else:
        ct, _, truth = style_case("own", seed, category, generator)
    row = {"generator": generator, "index": index, "seed": seed, "error_mm": [], "ncc": []}
    for scorer in _scorers:
        centre, _, ncc = scorer.locate_heart(ct)
        row["error_mm"].append(float(np.linalg.norm(centre - truth)))
        row["ncc"].append(float(ncc))
    return row


def _set(generator) -> str:
    return "alt" if generator == "alt" else f"generator_{generator}"


def summary(errors: np.ndarray, ncc: np.ndarray) -> dict:
    return {
        "median_mm": float(np.median(errors)),
        "p95_mm": float(np.percentile(errors, 95)),
        "max_mm": float(errors.max()),
        "within_21_mm": float(np.mean(errors <= 21.0)),
        "atlas_correlation_median": float(np.median(ncc)),
        "atlas_correlation_min": float(ncc.min()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.locate_compare")
    parser.add_argument("--weights", type=Path, nargs="+", required=True)
    parser.add_argument("--generator", type=int, nargs="*", choices=(2, 3, 4), default=[2, 4])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7373)
    parser.add_argument("--alt", action="store_true", help="also the second style's cases")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    jobs = [(g, *case) for g in args.generator for case in case_plan(args.n, args.seed)]
    sets = [f"generator_{g}" for g in args.generator]
    if args.alt:
        from training.phantoms_alt.output import plan as alt_plan

        jobs += [("alt", *case) for case in alt_plan(args.n, args.seed)]
        sets.append("alt")
    weights = [str(w) for w in args.weights]
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(weights,)) as pool:
        rows = list(pool.map(_job, jobs))
    result = {"seed": args.seed, "n": args.n, "weights": weights, "models": {}}
    for m, name in enumerate(weights):
        result["models"][name] = {
            label: summary(
                np.array([r["error_mm"][m] for r in rows if _set(r["generator"]) == label]),
                np.array([r["ncc"][m] for r in rows if _set(r["generator"]) == label]),
            )
            for label in sets
        }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "cases": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
