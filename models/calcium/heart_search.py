"""Refining the registration's heart centre by a direct search around it.

The registration ConvNet aligns the whole field of view to the atlas in one forward pass; on
phantoms it had not seen it places the heart with a mean error of about 25 mm (model card),
because one pass of a small network trained for 20 minutes is a coarse optimiser and the
whole-scan similarity also rewards aligning ribs, lungs and body outline. The score network
was trained with the heart within +-21 mm of the crop centre, so the largest of those errors
put the heart where it never learned to look.

This step optimises the same kind of objective directly for the one scan, as instance
optimisation after a learned registration does: in the atlas frame (the scan resampled through
the network's affine), every translation on the 5 mm grid within its radius is tried and the one
whose image best matches the atlas around its heart (normalised cross-correlation weighted by
the atlas heart probability dilated by 10 mm, nothing outside it) wins; a parabola through the
neighbours of the best shift gives the sub-voxel part. The correlations for all shifts are
three 3-D convolutions of the scan region with the weighted template, a few tens of
milliseconds on a CPU. No training and no labels: the atlas is the one shipped with the
weights.

On in the shipped models since 2.0 (manifest `registration.heart_search`): with version 1.0's
registration it cut the heart-centre error on unseen phantoms from 25 to 8 mm
(training/calcium/results/heart_search.json). The range is the manifest's
`registration.heart_search_radius_mm` (+-40 mm where a manifest has no such key, as the shipped
one, 2.7's, has not). On phantoms with a pericardial fat pad the +-40 mm search can jump 25-40 mm
towards the feet onto a false match; a registration that is closer on its own can use a
narrower search (the 2.6 candidate: +-15 mm, training/calcium/results/
registration_2.6_not_shipped/).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

SEARCH_RADIUS_VOX = 8  # +-40 mm on the 5 mm registration grid: the translation range
HEART_DILATION_VOX = 5  # +-10 mm around the atlas heart (also the registration loss's region)
MIN_WEIGHT = 0.02  # atlas voxels with less heart weight than this are left out of the template


class HeartSearch:
    """Translation search around the atlas heart; build once per atlas, call per scan."""

    def __init__(
        self,
        atlas: np.ndarray,
        atlas_heart: np.ndarray,
        device: torch.device,
        radius_vox: int = SEARCH_RADIUS_VOX,
    ) -> None:
        """atlas: the atlas volume (z, y, x) in network units (HU / 1000, clamped to +-1);
        atlas_heart: its heart probability (0-1) on the same grid; radius_vox: the largest
        shift tried per axis, in 5 mm voxels."""
        weight = near_heart(atlas_heart)
        weight[weight < MIN_WEIGHT] = 0.0
        inside = np.argwhere(weight > 0)
        self.radius = r = int(radius_vox)
        # Keep the template box (and the room the search needs around it) inside the grid.
        self.low = np.maximum(inside.min(axis=0), r)
        self.high = np.minimum(inside.max(axis=0) + 1, np.asarray(atlas.shape) - r)
        box = tuple(slice(lo, hi) for lo, hi in zip(self.low, self.high, strict=True))
        w = torch.from_numpy(weight[box])
        template = torch.from_numpy(atlas[box].astype(np.float32))
        self.total_weight = float(w.sum())
        centred = template - float((w * template).sum()) / self.total_weight
        self.template_variance = float((w * centred**2).sum())
        # Kernels for F.conv3d (a cross-correlation): weighted centred template, and weight.
        self.kernels = torch.stack([w * centred, w])[:, None].to(device)
        self.weight_kernel = w[None, None].to(device)

    def __call__(self, aligned: torch.Tensor) -> tuple[np.ndarray, float]:
        """aligned: the scan in the atlas frame (1, 1, Z, Y, X), network units.

        Returns the shift (x, y, z, in voxels of the grid, sub-voxel) that moves the atlas heart
        onto the scan's, and the weighted correlation there."""
        r = self.radius
        region = aligned[
            :, :, self.low[0] - r : self.high[0] + r,
            self.low[1] - r : self.high[1] + r,
            self.low[2] - r : self.high[2] + r,
        ]  # fmt: skip
        sums = F.conv3d(region, self.kernels)[0]  # (2, 2r+1, 2r+1, 2r+1): covariance, sum
        squares = F.conv3d(region * region, self.weight_kernel)[0, 0]
        variance = (squares - sums[1] ** 2 / self.total_weight).clamp_min(1e-8)
        ncc = (sums[0] / torch.sqrt(variance * self.template_variance)).double().cpu().numpy()
        best = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        shift_zyx = np.asarray(best, dtype=np.float64) - r
        for axis in range(3):
            shift_zyx[axis] += _parabola_peak(ncc, best, axis)
        return shift_zyx[::-1].copy(), float(ncc[best])


def near_heart(atlas_heart: np.ndarray) -> np.ndarray:
    """The atlas heart probability dilated by 10 mm: the region the registration's training loss
    weighs up and the only region the search compares."""
    return ndimage.grey_dilation(atlas_heart.astype(np.float32), size=(HEART_DILATION_VOX,) * 3)


def _parabola_peak(values: np.ndarray, best: tuple, axis: int) -> float:
    """Sub-voxel offset (-0.5..0.5) of the maximum along one axis; 0 at the search's edge."""
    if best[axis] in (0, values.shape[axis] - 1):
        return 0.0
    before, after = list(best), list(best)
    before[axis] -= 1
    after[axis] += 1
    f0, fm, fp = values[best], values[tuple(before)], values[tuple(after)]
    curvature = fm - 2 * f0 + fp
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (fm - fp) / curvature, -0.5, 0.5))
