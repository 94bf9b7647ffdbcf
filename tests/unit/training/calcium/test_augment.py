"""The appearance augmentation changes the tissue's look and never the candidates."""

from __future__ import annotations

import torch

from training.calcium import augment


def _crops() -> torch.Tensor:
    """Two crops (B, 4, Z, Y, X): air, lung, fat, blood and calcium cells in mean HU; the other
    channels random but recognisable."""
    g = torch.Generator().manual_seed(0)
    crops = torch.rand((2, 4, 6, 8, 8), generator=g)
    mean_hu = torch.tensor([-1024.0, -850.0, -100.0, 40.0, 129.0, 130.0, 400.0, 900.0])
    crops[:, 0] = mean_hu.repeat(6, 8, 1)
    crops[:, 1] *= 1000.0
    crops[:, 3] *= 50.0
    return crops


def test_only_sub_threshold_mean_hu_changes_and_stays_under_130() -> None:
    crops = _crops()
    out = augment.appearance(crops, torch.Generator().manual_seed(1), probability=1.0)
    # Peak HU, calcium fraction and candidate score: bit for bit (the exact method's inputs).
    assert torch.equal(out[:, 1:], crops[:, 1:])
    calcium = crops[:, 0] >= 130.0
    assert torch.equal(out[:, 0][calcium], crops[:, 0][calcium])
    assert (out[:, 0][~calcium] < 130.0).all()
    assert not torch.equal(out[:, 0][~calcium], crops[:, 0][~calcium])
    # The input is not modified in place.
    assert torch.equal(crops, _crops())


def test_tissue_order_is_kept_without_noise(monkeypatch) -> None:
    monkeypatch.setattr(augment, "MAX_NOISE_SD_HU", 0.0)
    crops = _crops()
    out = augment.appearance(crops, torch.Generator().manual_seed(2), probability=1.0)
    row = out[0, 0, 0, 0, :5]  # air, lung, fat, blood, 129 HU
    assert (row[1:] >= row[:-1]).all()
    assert not torch.equal(row, crops[0, 0, 0, 0, :5])


def test_probability_zero_changes_nothing_and_the_map_is_piecewise_linear() -> None:
    crops = _crops()
    assert torch.equal(augment.appearance(crops, torch.Generator(), probability=0.0), crops)
    identity = torch.tensor(augment.CONTROL_HU)
    values = torch.tensor([-2000.0, -1000.0, -800.0, -75.0, 0.0, 130.0])
    mapped = augment.piecewise_linear(values, identity)
    assert torch.allclose(mapped, values.clamp(-1000.0, 130.0))
    shifted = augment.piecewise_linear(torch.tensor([-800.0]), identity + torch.arange(6.0) * 10)
    assert torch.allclose(shifted, torch.tensor([-795.0]))  # halfway between -990 and -590
