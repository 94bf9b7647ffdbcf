"""The organ style report: labels stay aligned with the stored image, and the summary is the
mean of each style's own cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.labels import Label
from training.organs.evaluate_styles import case_image, markdown, summarise


def test_alt_labels_are_stored_as_the_image_is() -> None:
    # Second-style plan seeds store some cases feet-first or prone: the labels must be
    # mirrored with the image, or every Dice would be measured against the wrong voxels.
    for seed in (3, 4, 5, 6):
        image, labels = case_image("alt", seed, 0, 64)
        hu = sitk.GetArrayViewFromImage(image)
        assert hu.shape == labels.shape
        assert hu[labels == Label.LEFT_LUNG].mean() < -500
        assert hu[labels == Label.HEART].mean() > 0


def test_summary_is_per_style_and_structure() -> None:
    rows = [
        {"style": "own", "dice": {"heart": 0.8, "aorta": 0.6}},
        {"style": "own", "dice": {"heart": 0.6}},
        {"style": "alt", "dice": {"heart": 0.2}},
    ]
    summary = summarise(rows)
    assert summary["own"]["dice"]["heart"] == {"mean": 0.7, "median": 0.7, "min": 0.6, "n": 2}
    assert summary["own"]["dice"]["aorta"]["n"] == 1
    assert summary["alt"]["n"] == 1 and "aorta" not in summary["alt"]["dice"]
    table = markdown(summary, Path("organs_base.json"))
    assert "| own | 2 | 0.70 (0.70, 0.60)" in table
    assert np.isfinite(summary["alt"]["dice"]["heart"]["mean"])


def test_own_generator_chooses_the_variety_of_the_same_seed() -> None:
    # --own-generator 4 measures the held-out seeds made with fat around the heart: other
    # phantoms than version 2's, each labelled on its own image.
    v2_image, v2_labels = case_image("own", 22000, 0, 64)
    v4_image, v4_labels = case_image("own", 22000, 0, 64, generator=4)
    assert not np.array_equal(
        sitk.GetArrayViewFromImage(v2_image), sitk.GetArrayViewFromImage(v4_image)
    )
    for image, labels in ((v2_image, v2_labels), (v4_image, v4_labels)):
        hu = sitk.GetArrayViewFromImage(image)
        assert hu.shape == labels.shape
        assert hu[labels == Label.HEART].mean() > 0
