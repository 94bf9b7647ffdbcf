"""Label values follow the published U-Net's channel order (models/labels.py)."""

from __future__ import annotations

from models.labels import UNET_CHANNELS


def test_label_values_follow_the_published_unet_channels() -> None:
    names = [label.name for label in UNET_CHANNELS]
    assert names[0] == "AORTA" and names[4] == "HEART" and names[21] == "TRACHEA"
    assert [int(label) - 1 for label in UNET_CHANNELS] == list(range(22))
