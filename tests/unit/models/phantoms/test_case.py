"""A synthetic chest CT case: the same seed gives the same case; feet-first geometry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

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


def test_contrast_option_raises_the_blood_pool_and_leaves_the_rest() -> None:
    """CaseOptions.contrast_hu paints every blood structure at that HU (the contrast gate's
    phantoms); the anatomy, the random stream and the other tissues stay as the plain case."""
    options = CaseOptions(matrix=96, protocol=(2.5, 2.5), n_slices=60)
    plain = generate_case(9, 0, options)
    enhanced = generate_case(9, 0, dataclasses.replace(options, contrast_hu=350.0))

    # The same anatomy; a calcification's label (40-59, given to its voxels >= 130 HU) also
    # takes the enhanced lumen it touches, a few dozen voxels.
    def calcified(labels):
        return (labels >= 40) & (labels < 60)

    anatomy = ~calcified(plain.labels) & ~calcified(enhanced.labels)
    assert np.array_equal(plain.labels[anatomy], enhanced.labels[anatomy])
    assert (calcified(enhanced.labels) != calcified(plain.labels)).sum() < 100
    aorta = ndimage.binary_erosion(plain.labels == Label.AORTA, iterations=2)
    assert aorta.sum() > 50
    assert np.median(plain.image[aorta]) < 80
    assert abs(np.median(enhanced.image[aorta]) - 350) < 30
    liver = ndimage.binary_erosion(plain.labels == Label.LIVER, iterations=2)
    assert abs(np.median(enhanced.image[liver]) - np.median(plain.image[liver])) < 3
    assert enhanced.patient["tissue_hu"]["blood"] == 350.0
