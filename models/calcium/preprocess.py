"""Resampling a CT volume onto the two grids the calcium models work on.

* Registration grid: 80 x 80 x 80 voxels of 5 mm (a 400 mm cube) centred on the scan's field
  of view, identity direction. Coarse on purpose: it has to see the whole chest, and the
  registration only needs the layout of lungs, heart and bones. Averaging (bin shrink) before
  resampling avoids aliasing. The network averages it further to 10 mm
  (networks.registration_input).
* Score grid: 64 x 64 x 72 voxels of 3 x 3 x 2.5 mm (192 x 192 x 180 mm) centred on the
  heart as located by the registration, identity direction, physical scale kept (no rotation
  or scaling: the Agatston score is defined in mm^2 on axial slices). Three channels, each
  summarising the native voxels under one score voxel's footprint:
  - mean HU (context: heart, fat, vessels, bone);
  - peak HU, which sets the Agatston density weight even for a calcification far smaller than
    the score voxel;
  - the fraction of native voxels at or above 130 HU, i.e. the candidate area (and depth) the
    score counts, measured at the scan's own resolution;
  - the candidate score: the Agatston score of the native voxels whose centres fall in the
    score voxel, as if all the scan's calcium candidates were coronary (per-slice components,
    the 1 mm^2 minimum area and the component's density weight computed on the native grid,
    models.agatston.candidate_contributions). Summed over any set of score voxels it is exactly
    the score those voxels' candidates could carry, and the truth's own score density
    (training/calcium/prepare.py) is binned onto the grid the same way, so a lesion's score
    lies on the same score voxels as its candidate score, however small the lesion.
  With these, 3 mm loses nothing the score depends on, and the network runs on 1/8 of the
  voxels a 1.5 mm grid would need (the 2 s CPU budget, and training on a CPU).

Arrays are (z, y, x) float32 HU.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from models.agatston import candidate_contributions

AIR_HU = -1000.0
REG_SIZE = 80
REG_SPACING_MM = 5.0
SCORE_SIZE_XYZ = (64, 64, 72)
SCORE_SPACING_MM = (3.0, 3.0, 2.5)
SCORE_CHANNELS = ("mean_hu", "peak_hu", "calcium_fraction", "candidate_score")
CALCIUM_HU = 130.0


def grid_image(centre_mm, size_xyz, spacing_mm) -> sitk.Image:
    """An empty reference image: identity direction, centred on `centre_mm`."""
    ref = sitk.Image([int(s) for s in size_xyz], sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in spacing_mm])
    half = (np.asarray(size_xyz, dtype=float) - 1) / 2 * np.asarray(spacing_mm, dtype=float)
    ref.SetOrigin([float(v) for v in np.asarray(centre_mm, dtype=float) - half])
    return ref


def physical_centre(image: sitk.Image) -> np.ndarray:
    size = np.asarray(image.GetSize(), dtype=float)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint((size - 1) / 2))


def registration_grid(image: sitk.Image) -> sitk.Image:
    return grid_image(physical_centre(image), (REG_SIZE,) * 3, (REG_SPACING_MM,) * 3)


def registration_volume(image: sitk.Image) -> np.ndarray:
    """The whole scan on the 5 mm registration grid (HU)."""
    factors = [max(1, int(REG_SPACING_MM // s)) for s in image.GetSpacing()]
    small = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), factors)
    out = sitk.Resample(small, registration_grid(image), sitk.Transform(), sitk.sitkLinear, AIR_HU)
    return sitk.GetArrayFromImage(out)


def score_grid(centre_mm, size_xyz=SCORE_SIZE_XYZ) -> sitk.Image:
    return grid_image(centre_mm, size_xyz, SCORE_SPACING_MM)


def covering_region(image: sitk.Image, ref: sitk.Image, margin_vox: int = 2) -> sitk.Image:
    """The part of `image` that covers the reference grid, so filters run on it alone."""
    size = np.asarray(ref.GetSize())
    corners = [
        ref.TransformIndexToPhysicalPoint([int(c) for c in corner])
        for corner in np.stack(np.meshgrid(*[[0, s - 1] for s in size], indexing="ij"), -1).reshape(
            -1, 3
        )
    ]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    low = np.clip(np.floor(index.min(axis=0)).astype(int) - margin_vox, 0, None)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + margin_vox + 1, image.GetSize())
    if np.any(high <= low):
        return None
    return image[int(low[0]) : int(high[0]), int(low[1]) : int(high[1]), int(low[2]) : int(high[2])]


def grid_indices(image: sitk.Image, zyx: np.ndarray, ref: sitk.Image):
    """The nearest `ref` voxel of each native voxel of `image` given as (3, N) z, y, x indices:
    ((N, 3) x, y, z indices into `ref`, (N,) whether each lies inside it). `ref` has the
    identity direction (score_grid)."""
    origin = np.asarray(image.GetOrigin())
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    world = origin + (zyx[::-1].T * spacing) @ direction.T
    xyz = np.rint((world - np.asarray(ref.GetOrigin())) / np.asarray(ref.GetSpacing()))
    xyz = xyz.astype(np.int64)
    inside = np.all((xyz >= 0) & (xyz < np.asarray(ref.GetSize())), axis=1)
    return xyz, inside


def candidate_score(region: sitk.Image, native: np.ndarray, ref: sitk.Image) -> np.ndarray:
    """The candidate-score channel (see above) on `ref`, (z, y, x) float32 Agatston units."""
    spacing_zyx = region.GetSpacing()[::-1]
    where, share = candidate_contributions(native, spacing_zyx)
    xyz, inside = grid_indices(region, np.stack(np.unravel_index(where, native.shape)), ref)
    size_zyx = ref.GetSize()[::-1]
    flat = np.ravel_multi_index(tuple(xyz[inside, ::-1].T), size_zyx)
    binned = np.bincount(flat, share[inside], int(np.prod(size_zyx)))
    return binned.reshape(size_zyx).astype(np.float32)


def score_input(image: sitk.Image, centre_mm, size_xyz=SCORE_SIZE_XYZ) -> np.ndarray:
    """The four score-grid channels (see above), (4, z, y, x) float32."""
    ref = score_grid(centre_mm, size_xyz)
    region = covering_region(image, ref)
    if region is None:
        out = np.zeros((len(SCORE_CHANNELS), *size_xyz[::-1]), dtype=np.float32)
        out[:2] = AIR_HU
        return out
    native = sitk.GetArrayViewFromImage(region)
    # One score voxel's footprint in native voxels (odd, so the filters stay centred).
    footprint = tuple(
        2 * int(round(t / s / 2)) + 1
        for t, s in zip(SCORE_SPACING_MM[::-1], region.GetSpacing()[::-1], strict=True)
    )
    # scipy's separable box filters: ITK's grayscale dilation is about ten times slower here.
    channels = [
        ndimage.uniform_filter(native.astype(np.float32), footprint),
        ndimage.maximum_filter(native, footprint).astype(np.float32),
        ndimage.uniform_filter((native >= CALCIUM_HU).astype(np.float32), footprint),
    ]
    out = []
    for channel, outside in zip(channels, (AIR_HU, AIR_HU, 0.0), strict=True):
        filtered = sitk.GetImageFromArray(channel)
        filtered.CopyInformation(region)
        resampled = sitk.Resample(filtered, ref, sitk.Transform(), sitk.sitkLinear, outside)
        out.append(sitk.GetArrayFromImage(resampled))
    out.append(candidate_score(region, native, ref))
    return np.stack(out)
