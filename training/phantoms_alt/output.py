"""Cases on disk: image.nii.gz (int16 HU), labels.nii.gz (uint8), truth.json, optionally a
DICOM series; and the plan of which cases a run makes (categories balanced)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training.phantoms_alt.case import AltCase
from training.phantoms_alt.dicom import write_series
from training.phantoms_alt.grid import to_image

STYLE_SALT = 25  # keeps this style's case seeds apart from any other generator's


def plan(n: int, seed: int) -> list[tuple[int, int, int]]:
    """(index, case seed, target category): each category n/5 times, in a shuffled order."""
    rng = np.random.default_rng([seed, STYLE_SALT])
    categories = np.arange(n) % 5
    rng.shuffle(categories)
    return [
        (i, int(np.random.SeedSequence([seed, STYLE_SALT, i]).generate_state(1)[0]), int(c))
        for i, c in enumerate(categories)
    ]


def write_case(case: AltCase, folder: Path, dicom: bool = False,
               contrast_header: bool = False) -> Path:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    position = case.acquisition.position
    sitk.WriteImage(to_image(case.image, case.grid, position), str(folder / "image.nii.gz"), True)
    sitk.WriteImage(to_image(case.labels, case.grid, position), str(folder / "labels.nii.gz"), True)
    (folder / "truth.json").write_text(json.dumps(case.truth_dict(), indent=1) + "\n")
    if dicom:
        write_series(case, folder / "dicom", contrast_header)
    return folder
