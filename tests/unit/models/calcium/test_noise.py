"""models/calcium/noise.py: the image-noise statistic around the heart and its limit."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from models.calcium.noise import NOISE_LIMIT_HU, NoiseAssessment, noise_sd_hu
from models.calcium.result import EXCESS_NOISE_FLAG, UNTRUSTED_FLAGS

SPACING = (0.8, 0.8, 3.0)


def _scan(array: np.ndarray, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.rint(array).astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin((-60.0, -60.0, -60.0))
    image.SetDirection(direction)
    return image


def _soft_tissue(sd: float, seed: int = 0, edge: bool = False) -> np.ndarray:
    """(z, y, x) = 40 x 150 x 150: blood at 40 HU with white Gaussian noise of `sd`; `edge`
    puts lung (-800 HU) in the left third, so an organ border crosses the sphere."""
    rng = np.random.default_rng(seed)
    array = np.full((40, 150, 150), 40.0) + rng.normal(0.0, sd, (40, 150, 150))
    if edge:
        array[:, :, :50] -= 840.0
    return array


@pytest.mark.parametrize("sd", [8.0, 20.0, 45.0, 110.0])
def test_noise_of_homogeneous_tissue_is_measured(sd: float) -> None:
    centre = _scan(_soft_tissue(sd)).TransformIndexToPhysicalPoint((75, 75, 20))
    measured = noise_sd_hu(_scan(_soft_tissue(sd)), centre)
    assert measured == pytest.approx(sd, rel=0.05)


def test_an_organ_border_does_not_raise_the_noise() -> None:
    """The lung-blood edge (840 HU) is left out by the flatness test and the soft-tissue window;
    without them the statistic would be dominated by it."""
    scan = _scan(_soft_tissue(10.0, edge=True))
    centre = scan.TransformIndexToPhysicalPoint((60, 75, 20))  # 8 mm from the border
    assert noise_sd_hu(scan, centre) == pytest.approx(10.0, rel=0.05)


def test_feet_first_scan_and_missing_tissue() -> None:
    feet_first = _scan(_soft_tissue(30.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    centre = feet_first.TransformIndexToPhysicalPoint((75, 75, 20))
    assert noise_sd_hu(feet_first, centre) == pytest.approx(30.0, rel=0.05)
    # Off the scan, or in air only: nothing to measure, no verdict either way.
    assert noise_sd_hu(feet_first, np.asarray(centre) + 1000.0) is None
    air = _scan(np.full((40, 150, 150), -1000.0))
    assert noise_sd_hu(air, air.TransformIndexToPhysicalPoint((75, 75, 20))) is None


def test_the_limit_and_the_flag() -> None:
    assert not NoiseAssessment(sd_hu=NOISE_LIMIT_HU).excessive
    assert NoiseAssessment(sd_hu=NOISE_LIMIT_HU + 0.1).excessive
    assert not NoiseAssessment(sd_hu=None).excessive
    assert NoiseAssessment(sd_hu=41.06).to_dict() == {
        "sd_hu": 41.1,
        "limit_hu": NOISE_LIMIT_HU,
        "excessive": True,
    }
    assert EXCESS_NOISE_FLAG in UNTRUSTED_FLAGS
