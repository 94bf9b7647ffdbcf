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
