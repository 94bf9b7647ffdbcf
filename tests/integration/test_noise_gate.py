"""The image-noise gate (models/calcium/noise.py; issue 25: real calcium-free scans, both
kernels). The statistic measures the noise the phantom generators of both styles put in (soft
and sharp kernels, at the true heart centre), and the scorer flags the real lung-kernel control
`excess_image_noise` (indeterminate: no risk category) but not the soft kernel of the same
acquisition."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.calcium.noise import NOISE_LIMIT_HU, noise_sd_hu
from models.calcium.result import EXCESS_NOISE_FLAG
from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.variety import variety_for
from node.pipelines.calcium import score_summary
from node.volume import read_ct
from tests.tools import require_real_data
from training.phantoms_alt.case import AltOptions
from training.phantoms_alt.case import generate_case as generate_alt_case
from training.phantoms_alt.grid import to_image

# Generator-4 cases (fat and noisier sharp kernels) of 256 x 256 x 50: seeds 2 and 5 soft
# (10 and 30 HU), 7 sharp (48 HU).
OWN = CaseOptions(matrix=256, protocol=(3.0, 3.0), n_slices=50, variety=variety_for(4))


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_noise_of_own_style_phantoms(seed: int) -> None:
    case = generate_case(seed, 1, OWN)
    measured = noise_sd_hu(case.grid.to_image(case.image), case.patient["heart_centre_mm"])
    truth = case.acquisition.noise_sd_hu
    assert measured == pytest.approx(truth, rel=0.1)
    assert (measured > NOISE_LIMIT_HU) == (truth > NOISE_LIMIT_HU), (truth, measured)


@pytest.mark.parametrize("seed", [1, 3])  # sharp, 40 HU; soft, 7 HU
def test_noise_of_second_style_phantoms(seed: int) -> None:
    case = generate_alt_case(seed, 1, AltOptions(matrix=256))
    image = to_image(case.image, case.grid, case.acquisition.position)
    measured = noise_sd_hu(image, case.patient.heart.centre)
    assert measured == pytest.approx(case.acquisition.noise_sd_hu, rel=0.1)


@pytest.fixture(scope="module")
def scorer(weights: Path):
    from models.calcium.inference import CalciumScorer

    return CalciumScorer(weights, device="cpu")


def test_real_lung_kernel_is_flagged_and_soft_kernel_is_not(scorer) -> None:
    soft = scorer.score(read_ct(require_real_data("lung_pet_ct_dx_A0001", "series_soft_kernel")))
    lung = scorer.score(read_ct(require_real_data("lung_pet_ct_dx_A0001", "series_lung_kernel")))
    assert soft.noise["sd_hu"] < 15 and EXCESS_NOISE_FLAG not in soft.flags
    assert lung.noise["sd_hu"] > NOISE_LIMIT_HU and lung.noise["excessive"]
    assert EXCESS_NOISE_FLAG in lung.flags and lung.indeterminate
    report = lung.to_dict()
    assert report["category"] is None and report["category_name"] == "indeterminate"
    assert EXCESS_NOISE_FLAG in report["untrusted_flags"]
    summary = score_summary(lung)
    assert "NOT VALID" in summary and f"image noise {lung.noise['sd_hu']:.0f} HU" in summary


def test_ctnode_score_shows_the_noise_and_no_category(weights: Path) -> None:
    import json

    from typer.testing import CliRunner

    from node.cli import app

    path = str(require_real_data("lung_pet_ct_dx_A0001", "series_lung_kernel"))
    runner = CliRunner()
    as_json = runner.invoke(app, ["score", path, "--json", "--weights", str(weights)])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report["noise"]["excessive"] and report["noise"]["sd_hu"] > NOISE_LIMIT_HU
    assert report["category"] is None and EXCESS_NOISE_FLAG in report["untrusted_flags"]
    text = runner.invoke(app, ["score", path, "--weights", str(weights)])
    assert text.exit_code == 0, text.output
    assert f"NOT VALID ({EXCESS_NOISE_FLAG})" in text.output
    assert f"{report['noise']['sd_hu']:.1f} HU around the heart" in text.output
