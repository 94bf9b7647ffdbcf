"""training/calcium/where_lost.py with the shipped model: the truth's score is split, exactly,
into where it was lost or counted."""

from __future__ import annotations

import pytest

from models.calcium.inference import MANIFEST, WEIGHTS_DIR, CalciumScorer
from models.phantoms.case import CaseOptions, generate_case
from training.calcium.where_lost import BINS, follow

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / MANIFEST).exists(), reason="no shipped calcium model"
)


def test_the_truth_is_split_exactly_and_what_is_counted_is_the_exact_score() -> None:
    scorer = CalciumScorer(device="cpu", method="exact")
    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct, labels = case.grid.to_image(case.image), case.grid.to_image(case.labels)
    split, _ = follow(scorer, ct, labels)
    for artery, bins in split.items():
        assert set(bins) == set(BINS)
        assert sum(bins.values()) == pytest.approx(case.truth.per_artery[artery], rel=1e-6)
    counted = sum(bins["counted"] for bins in split.values())
    # On this phantom the shipped model counts all of the truth (365.6 AU when written), and
    # what is counted of the truth is what the exact method scores (it labels nothing else).
    assert counted >= 0.9 * case.truth.total
    assert counted == pytest.approx(scorer.score(ct).agatston_total, rel=0.05)


def test_lung_to_fat_makes_fat_of_the_lung_next_to_the_heart_only() -> None:
    import numpy as np
    import SimpleITK as sitk

    from models.labels import Label
    from training.calcium.where_lost import FAT_HU, lung_to_fat

    case = generate_case(7, 2, CaseOptions(matrix=128, protocol=(2.5, 2.5), n_slices=60))
    ct, labels = case.grid.to_image(case.image), case.grid.to_image(case.labels)
    before = sitk.GetArrayFromImage(ct)
    after = sitk.GetArrayFromImage(lung_to_fat(ct, labels, 10.0, seed=1))
    changed = after != before
    assert changed.sum() > 100
    assert abs(float(np.median(after[changed])) - FAT_HU) < 5.0
    assert (before[changed] < -300).all()  # only lung
    lungs = np.isin(case.labels, (Label.LEFT_LUNG, Label.RIGHT_LUNG))
    assert changed[lungs].mean() < 0.5  # only next to the heart
