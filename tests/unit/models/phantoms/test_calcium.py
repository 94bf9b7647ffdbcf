"""Phantom calcium: lesions reach the requested category, confounders and incidental
calcifications are bright but never count."""

from __future__ import annotations

import numpy as np
import pytest

from models.agatston import agatston
from models.labels import Label
from models.phantoms.case import CaseOptions, generate_case


@pytest.mark.parametrize("category", range(5))
def test_requested_category_is_reached(category: int) -> None:
    case = generate_case(100 + category, category, CaseOptions(matrix=256, protocol=(3.0, 3.0)))
    assert case.truth.category == category
    lesion_voxels = np.isin(case.labels, [40, 41, 42, 43])
    assert lesion_voxels.any() == (category > 0)
    # Annotated lesion voxels are calcium by definition: at least 130 HU in the final image.
    assert (case.image[lesion_voxels] >= 130).all()


def test_confounders_are_bright_but_do_not_count() -> None:
    case = generate_case(21, 4, CaseOptions(matrix=256, protocol=(2.5, 2.5)))
    confounder = np.isin(case.labels, [50, 51, 52])
    assert confounder.any() and (case.image[confounder] >= 130).all()
    relabelled = np.where(confounder, np.uint8(Label.CAC_LAD), case.labels)
    spacing = case.spacing_zyx
    assert agatston(case.image, relabelled, spacing).total > case.truth.total
    assert agatston(case.image, case.labels, spacing).total == case.truth.total
    # Bone is far brighter than 130 HU and is never labelled as coronary calcium.
    bone = np.isin(case.labels, [Label.VERTEBRAE, Label.RIBS, Label.STERNUM])
    assert np.median(case.image[bone]) > 200


INCIDENTAL = (
    Label.LYMPH_NODE_CALCIFICATION,
    Label.AIRWAY_CARTILAGE_CALCIFICATION,
    Label.LUNG_GRANULOMA_CALCIFICATION,
)


def test_incidental_calcifications_are_common_bright_and_never_coronary() -> None:
    options = CaseOptions(matrix=128, protocol=(2.5, 2.5))
    seen = set()
    for seed in range(30, 42):
        case = generate_case(seed, 0, options)  # category 0: no coronary calcium at all
        present = {Label(v) for v in np.unique(case.labels)} & set(INCIDENTAL)
        for label in present:
            assert (case.image[case.labels == label] >= 130).all()
        assert case.truth.total == 0
        seen |= present
        if seen == set(INCIDENTAL):
            break
    assert seen == set(INCIDENTAL), f"12 cases showed only {seen}"


def test_incidental_calcifications_leave_the_rest_of_a_case_as_version_1_made_it() -> None:
    """They come from a random stream of their own: without them (CaseOptions.incidental
    False, as generator version 1 made the case) the anatomy, scan, noise, lesions and truth
    are the same."""
    options = CaseOptions(matrix=128, protocol=(2.5, 2.5))
    with_them = generate_case(33, 3, options)
    assert any(c.label in INCIDENTAL for c in with_them.calcifications)
    without = generate_case(33, 3, CaseOptions(matrix=128, protocol=(2.5, 2.5), incidental=False))
    assert not np.isin(without.labels, INCIDENTAL).any()
    assert without.truth == with_them.truth
    lesions = [c for c in with_them.calcifications if c.label not in INCIDENTAL]
    assert [c.to_dict() for c in without.calcifications] == [c.to_dict() for c in lesions]
    untouched = ~np.isin(with_them.labels, INCIDENTAL)
    assert (with_them.image == without.image)[untouched].mean() > 0.99
