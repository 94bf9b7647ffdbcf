"""The score network's Agatston gate: the prior it multiplies is the Agatston definition applied
to the score grid, and the map is zero where the definition says there is no score."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.agatston import agatston
from models.calcium.networks import AU_PER_COUNTED_VOXEL, ScoreNet, calcium_prior
from models.calcium.preprocess import score_input
from models.labels import Label


def _scan_with_plaques(spacing_xyz, plaques):
    """A soft-tissue volume (40 HU) with calcium blocks; returns (image, labels array)."""
    size = [int(round(120 / s)) for s in spacing_xyz]
    hu = np.full(size[::-1], 40.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for (x0, y0, z0), (dx, dy, dz), value in plaques:  # mm, relative to the volume's corner
        sl = tuple(
            slice(int(round(a / s)), int(round((a + d) / s)))
            for a, d, s in zip((z0, y0, x0), (dz, dy, dx), spacing_xyz[::-1], strict=True)
        )
        hu[sl] = value
        labels[sl] = Label.CAC_LAD
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing_xyz)
    return image, labels


PLAQUES = {  # corner (mm), size (mm), HU -> density weight 3, 4 and 1
    "weight-3 block": ((30.0, 30.0, 30.0), (6.0, 6.0, 7.5), 350.0),
    "weight-4 bar": ((70.0, 60.0, 60.0), (9.0, 3.0, 5.0), 600.0),
    "weight-1 speck": ((40.0, 80.0, 80.0), (3.0, 3.0, 2.5), 160.0),
}


@pytest.mark.parametrize("plaque", PLAQUES.values(), ids=PLAQUES.keys())
@pytest.mark.parametrize(
    "spacing_xyz",
    [(0.75, 0.75, 1.25), (0.5, 0.5, 2.5), (0.9, 0.9, 0.625), (0.6, 0.6, 0.5)],
    ids=str,
)
def test_prior_follows_the_agatston_definition(spacing_xyz, plaque):
    image, labels = _scan_with_plaques(spacing_xyz, [plaque])
    truth = agatston(sitk.GetArrayViewFromImage(image), labels, spacing_xyz[::-1]).total
    centre = np.asarray(
        image.TransformContinuousIndexToPhysicalPoint((np.asarray(image.GetSize()) - 1) / 2)
    )
    channels = torch.from_numpy(score_input(image, centre, (40, 40, 48)))[None]
    weight = {350.0: 3, 600.0: 4, 160.0: 1}[plaque[2]]
    # The counted area survives the score grid: the calcium fraction summed over the grid,
    # x AU_PER_COUNTED_VOXEL x the lesion's weight, is its Agatston score at any pixel size
    # and slice increment (within 5 %: the box filter is rounded to whole native voxels).
    counted = float(channels[0, 2].sum()) * AU_PER_COUNTED_VOXEL * weight
    assert counted == pytest.approx(truth, rel=0.05)
    # The peak channel is interpolated, so a lesion's edge voxels can get a lower weight than
    # its peak (the network's learned correction makes that up); never a higher one.
    prior = float(calcium_prior(channels).sum())
    assert 0.6 * truth <= prior <= truth * 1.001


def test_map_is_zero_without_candidate_calcium_and_never_negative():
    torch.manual_seed(0)
    channels = torch.empty(1, 3, 16, 16, 16)
    channels[:, 0] = 40.0
    channels[:, 1] = 120.0  # nothing reaches 130 HU ...
    channels[:, 2] = 0.0
    channels[:, 1, 8, 8, 8] = 450.0  # ... except one voxel, half of it calcium
    channels[:, 2, 8, 8, 8] = 0.5
    net = ScoreNet(width=8)
    for p in net.parameters():  # arbitrary weights: the gate must hold for any network
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        score_map = net(channels, torch.ones(1, 3))
    assert score_map.shape == (1, 3, 16, 16, 16)
    assert float(score_map.min()) >= 0.0
    outside = score_map.clone()
    outside[..., 8, 8, 8] = 0
    assert float(outside.abs().max()) == 0.0
    # The one candidate voxel can carry at most prior x e^2 (weight 4, half counted: 15 AU).
    assert float(calcium_prior(channels)[0, 0, 8, 8, 8]) == pytest.approx(0.5 * 4 * 7.5)
    assert float(score_map[..., 8, 8, 8].max()) <= 15.0 * np.exp(2.0) + 1e-3
