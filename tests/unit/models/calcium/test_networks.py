"""The score network's Agatston gate: the prior it multiplies is the Agatston definition applied
to the score grid, and the map is zero where the definition says there is no score.

Two priors (networks.PRIORS): "candidate", the candidate-score channel (the definition computed
on the native voxels and binned onto the grid), and "summary", version 1.0's definition applied
to each score voxel's summary channels."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.agatston import agatston
from models.calcium.networks import AU_PER_COUNTED_VOXEL, PRIORS, ScoreNet, calcium_prior
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


SPACINGS = [(0.75, 0.75, 1.25), (0.5, 0.5, 2.5), (0.9, 0.9, 0.625), (0.6, 0.6, 0.5)]


def _centre(image: sitk.Image) -> np.ndarray:
    return np.asarray(
        image.TransformContinuousIndexToPhysicalPoint((np.asarray(image.GetSize()) - 1) / 2)
    )


@pytest.mark.parametrize("plaque", PLAQUES.values(), ids=PLAQUES.keys())
@pytest.mark.parametrize("spacing_xyz", SPACINGS, ids=str)
def test_candidate_score_is_the_agatston_score(spacing_xyz, plaque):
    image, labels = _scan_with_plaques(spacing_xyz, [plaque])
    truth = agatston(sitk.GetArrayViewFromImage(image), labels, spacing_xyz[::-1]).total
    channels = torch.from_numpy(score_input(image, _centre(image), (40, 40, 48)))[None]
    # Binned from the native voxels, the candidate score loses nothing on the 3 mm grid.
    assert float(channels[0, 3].sum()) == pytest.approx(truth, rel=1e-5)
    assert float(calcium_prior(channels, "candidate").sum()) == pytest.approx(truth, rel=1e-5)


def test_candidate_score_drops_specks_under_one_square_millimetre():
    speck = ((40.0, 80.0, 80.0), (1.0, 0.5, 2.5), 500.0)  # 0.5 mm^2 in every slice
    image, labels = _scan_with_plaques((0.5, 0.5, 1.25), [speck])
    assert agatston(sitk.GetArrayViewFromImage(image), labels, (1.25, 0.5, 0.5)).total == 0
    channels = torch.from_numpy(score_input(image, _centre(image), (40, 40, 48)))[None]
    assert float(channels[0, 2].sum()) > 0  # the speck is a candidate ...
    assert float(channels[0, 3].sum()) == 0  # ... that the Agatston definition does not count
    assert float(calcium_prior(channels, "summary").sum()) > 0  # version 1.0 had to learn it


def test_candidate_score_lies_under_the_calcium_whatever_the_scan_direction():
    image, _ = _scan_with_plaques((0.75, 0.75, 1.25), list(PLAQUES.values()))
    flipped = sitk.DICOMOrient(image, "RAI")  # same patient space, rows and slices reversed
    assert flipped.GetDirection() != image.GetDirection()
    centre = _centre(image)
    np.testing.assert_allclose(
        score_input(flipped, centre, (40, 40, 48))[3],
        score_input(image, centre, (40, 40, 48))[3],
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize("plaque", PLAQUES.values(), ids=PLAQUES.keys())
@pytest.mark.parametrize("spacing_xyz", SPACINGS, ids=str)
def test_summary_prior_follows_the_agatston_definition(spacing_xyz, plaque):
    image, labels = _scan_with_plaques(spacing_xyz, [plaque])
    truth = agatston(sitk.GetArrayViewFromImage(image), labels, spacing_xyz[::-1]).total
    channels = torch.from_numpy(score_input(image, _centre(image), (40, 40, 48)))[None]
    weight = {350.0: 3, 600.0: 4, 160.0: 1}[plaque[2]]
    # The counted area survives the score grid: the calcium fraction summed over the grid,
    # x AU_PER_COUNTED_VOXEL x the lesion's weight, is its Agatston score at any pixel size
    # and slice increment (within 5 %: the box filter is rounded to whole native voxels).
    counted = float(channels[0, 2].sum()) * AU_PER_COUNTED_VOXEL * weight
    assert counted == pytest.approx(truth, rel=0.05)
    # The peak channel is interpolated, so a lesion's edge voxels can get a lower weight than
    # its peak (the network's learned correction makes that up); never a higher one.
    prior = float(calcium_prior(channels, "summary").sum())
    assert 0.6 * truth <= prior <= truth * 1.001


@pytest.mark.parametrize("prior", PRIORS)
def test_map_is_zero_without_candidate_calcium_and_never_negative(prior):
    torch.manual_seed(0)
    channels = torch.zeros(1, 4, 16, 16, 16)
    channels[:, 0] = 40.0
    channels[:, 1] = 120.0  # nothing reaches 130 HU ...
    channels[:, 1, 8, 8, 8] = 450.0  # ... except one voxel, half of it calcium
    channels[:, 2, 8, 8, 8] = 0.5
    channels[:, 3, 8, 8, 8] = 15.0  # its candidate score: weight 4, half counted
    net = ScoreNet(width=8, prior=prior)
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
    assert float(calcium_prior(channels, prior)[0, 0, 8, 8, 8]) == pytest.approx(0.5 * 4 * 7.5)
    assert float(score_map[..., 8, 8, 8].max()) <= 15.0 * np.exp(2.0) + 1e-3


def test_an_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="unknown prior"):
        ScoreNet(width=8, prior="threshold")
