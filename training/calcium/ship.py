"""Install trained calcium models into models/weights with their manifest and model cards.

python -m training.calcium.ship [--registration RUN] [--score RUN] [--weights models/weights]
                                [--version V]

A coronary_region.json in the score run folder (coronary_extent.py) becomes the manifest's
`score.coronary_region_mm`: the score map counts only inside that box around the heart.

Without --registration the installed registration ConvNet and atlas stay as they are (a new
score network for the same registration, e.g. a further stage of score training). Without
--score the installed score network stays, with everything its manifest section records
(presence threshold, coronary region, method and why): a new registration for the same score
network. One of the two is needed.

Weights are stored in float16 (half the size; the networks run in float32 after loading and
the scores move by far less than a unit). The manifest records each file's sha256, which the
loader checks before it uses anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

import torch

from models.calcium.inference import MANIFEST, METHODS, WEIGHTS_DIR
from models.files import sha256
from models.phantoms.case import GENERATOR_VERSION
from training.calcium.cards import write_cards
from training.calcium.common import write_json
from training.calcium.coronary_extent import REGION_FILE

VERSION = "2.0"


def half_precision(source: Path, target: Path) -> None:
    state = torch.load(source, map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calcium.ship")
    parser.add_argument(
        "--registration",
        type=Path,
        help="train_registration run folder (default: keep the installed registration)",
    )
    parser.add_argument(
        "--score", type=Path, help="train_score run folder (default: keep the installed score)"
    )
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--data-note", default="", help="how the training samples were made (command)"
    )
    parser.add_argument(
        "--version", default=VERSION, help=f"model version in the manifest (default {VERSION})"
    )
    parser.add_argument(
        "--presence-threshold",
        type=float,
        help="score with a hard presence decision at this probability (default: the choice "
        "in the score run's presence_selection.json, else the soft product)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="regression",
        help="the scoring method the manifest ships (default regression; exact: run "
        "select_exact afterwards to choose its presence threshold for these weights)",
    )
    parser.add_argument(
        "--generator",
        default=GENERATOR_VERSION,
        help=f"phantom generator version the score network trained on (default "
        f"{GENERATOR_VERSION}; 3: prepare --generator 3)",
    )
    parser.add_argument(
        "--heart-search",
        action=argparse.BooleanOptionalAction,
        help="refine the heart centre by the search at inference (default: keep the "
        "installed registration's setting; a new registration: off)",
    )
    parser.add_argument(
        "--heart-search-radius",
        type=float,
        metavar="MM",
        help="the largest shift the heart search tries per axis (default: keep the installed "
        "registration's; a new registration: +-40 mm)",
    )
    args = parser.parse_args(argv)

    files = {
        "atlas": "calcium_atlas.npz",
        "registration": "calcium_registration.pt",
        "score": "calcium_score.pt",
    }
    if args.registration is None and args.score is None:
        parser.error("give --registration, --score or both")
    installed_file = args.weights / MANIFEST
    installed = json.loads(installed_file.read_text()) if installed_file.exists() else None
    if installed is None and (args.registration is None or args.score is None):
        parser.error(f"{installed_file} has no model to keep: give --registration and --score")
    if args.registration is None:
        registration = installed["registration"]
    else:
        args.weights.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.registration / "atlas.npz", args.weights / files["atlas"])
        half_precision(args.registration / "registration.pt", args.weights / files["registration"])
        shutil.copyfile(
            args.registration / "registration_curve.png",
            args.weights / "calcium_registration_curve.png",
        )
        registration = json.loads((args.registration / "registration_metrics.json").read_text())
    if args.heart_search is not None:
        registration["heart_search"] = args.heart_search
    if args.heart_search_radius is not None:
        registration["heart_search_radius_mm"] = args.heart_search_radius
    score_section = installed["score"] if args.score is None else score_record(args, files["score"])
    manifest = {
        "name": "ctnode-calcium",
        "version": args.version,
        "date": date.today().isoformat(),
        "generator_version": args.generator,
        "training_data": args.data_note,
        "files": files,
        "sha256": {name: sha256(args.weights / name) for name in files.values()},
        # The run records without their curves (those are in the PNGs next to the weights).
        "registration": {k: v for k, v in registration.items() if k != "history"},
        "score": score_section,
    }
    write_json(args.weights / MANIFEST, manifest)
    write_cards(args.weights)
    print(json.dumps({k: manifest["sha256"][v] for k, v in files.items()}, indent=1))
    return 0


def score_record(args, score_file: str) -> dict:
    """Install the score run's weights and curve; its manifest section."""
    half_precision(args.score / "score.pt", args.weights / score_file)
    shutil.copyfile(args.score / "score_curve.png", args.weights / "calcium_score_curve.png")
    score = json.loads((args.score / "score_metrics.json").read_text())
    selection_file = args.score / "presence_selection.json"  # select_presence.py
    selection = json.loads(selection_file.read_text()) if selection_file.exists() else None
    region_file = args.score / REGION_FILE  # coronary_extent.py
    region = json.loads(region_file.read_text()) if region_file.exists() else None
    threshold = args.presence_threshold
    if threshold is None and selection is not None:
        threshold = selection["chosen"]
    return {
        **{k: v for k, v in score.items() if k != "history"},
        "presence_threshold": threshold,
        "presence_selection": selection,
        "method": args.method,
        **(
            {}
            if region is None
            else {
                "coronary_region_mm": {"low": region["low_mm"], "high": region["high_mm"]},
                "coronary_region": region,
            }
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
