"""A synthetic chest CT case: the same seed gives the same case; feet-first geometry."""

from __future__ import annotations

import numpy as np
import pytest

from models.labels import Label
from models.phantoms.case import CaseOptions, generate_case


def test_same_seed_gives_the_same_case() -> None:
    options = CaseOptions(matrix=96, protocol=(2.5, 2.5), n_slices=70)
    a, b = generate_case(5, 2, options), generate_case(5, 2, options)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert a.truth == b.truth
    c = generate_case(6, 2, options)
    assert not np.array_equal(a.image, c.image)


def test_feet_first_geometry_is_right_handed_and_mirrored() -> None:
    for seed in range(50):
        case = generate_case(seed, 0, CaseOptions(matrix=64, protocol=(5.0, 5.0), n_slices=40))
        if case.acquisition.patient_position == "FFS":
            break
    else:
        pytest.fail("no feet-first case among 50 seeds")
    assert case.grid.direction == (-1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1)
    # The heart lies on the patient's left (+x): with columns running towards -x it sits in
    # the lower column indices.
    heart_columns = np.nonzero(case.labels == Label.HEART)[2]
    assert heart_columns.mean() < case.grid.shape[2] / 2 + 10
