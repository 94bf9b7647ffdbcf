"""Phantom tissues have plausible CT numbers."""

from __future__ import annotations

import numpy as np

from models.labels import Label
from models.phantoms.case import CaseOptions, generate_case


def test_anatomy_has_plausible_hu() -> None:
    case = generate_case(8, 2, CaseOptions(matrix=256, protocol=(2.5, 2.5)))
    median = {
        lab: float(np.median(case.image[case.labels == lab]))
        for lab in Label
        if (case.labels == lab).any()
    }
    assert -950 < median[Label.LEFT_LUNG] < -750
    assert -950 < median[Label.RIGHT_LUNG] < -750
    assert -140 < median[Label.SUBCUTANEOUS_FAT] < -60
    assert 20 < median[Label.HEART] < 70
    assert 20 < median[Label.AORTA] < 70
    assert median[Label.VERTEBRAE] > 150
    assert median[Label.TRACHEA] < -600  # air lumen dominates
    assert median[Label.EPICARDIAL_FAT] < -30
