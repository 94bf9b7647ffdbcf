"""Variants of a case: a cardiac field of view (as a dedicated calcium-scoring reconstruction
would have) and the contrast-enhanced image.

Cardiac field of view: a 220 mm square centred (within a few millimetres) on the heart, from
the carina to 10-20 mm below the apex. `fov_crop` keeps the case's own voxels (a sub-array at
the same spacing: the truth cannot change as long as every lesion voxel is kept, which the
tests check); `fov_resampled` resamples that crop to a 512 matrix (0.43 mm pixels, linear;
labels nearest) as a scanner reconstructing the small field would, and recomputes the truth on
the resampled voxels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from models.agatston import agatston
from training.phantoms_alt.case import HU_RANGE, AltCase, streams
from training.phantoms_alt.grid import Grid

CARDIAC_FOV_MM = 220.0


def _fov_box(case: AltCase, fov_mm: float) -> tuple[slice, slice, slice]:
    rng = streams(case.seed)["fov"]
    g, pt = case.grid, case.patient
    centre = pt.heart.centre[:2] + rng.uniform(-8, 8, 2)
    top = pt.carina_z + rng.uniform(0, 10)
    bottom = pt.apex_z - rng.uniform(10, 20)
    half = fov_mm / 2
    box = []
    limits = ((bottom, top), (centre[1] - half, centre[1] + half),
              (centre[0] - half, centre[0] + half))  # fmt: skip
    for axis, (lo_mm, hi_mm) in enumerate(limits):
        origin, step, n = g.origin[2 - axis], g.spacing[axis], g.shape[axis]
        start = int(np.ceil((lo_mm - origin) / step))
        count = int(round((hi_mm - lo_mm) / step))
        if axis > 0:  # keep the full width: shift inwards at the scan's edge
            start = int(np.clip(start, 0, max(n - count, 0)))
        start, stop = max(start, 0), min(start + count, n)
        box.append(slice(start, stop))
    return tuple(box)


def fov_crop(case: AltCase, fov_mm: float = CARDIAC_FOV_MM) -> AltCase:
    """The cardiac field of view as a sub-array of the case (same voxels, same spacing)."""
    box = _fov_box(case, fov_mm)
    grid = case.grid.sub(box)
    image = np.ascontiguousarray(case.image[box])
    labels = np.ascontiguousarray(case.labels[box])
    acq = replace(case.acquisition, fov_mm=round(grid.shape[2] * grid.spacing[2], 1),
                  matrix=grid.shape[2])  # fmt: skip
    enhanced = (
        None if case.contrast_image is None else np.ascontiguousarray(case.contrast_image[box])
    )
    return replace(case, variant="fov_crop", grid=grid, acquisition=acq, image=image,
                   labels=labels, truth=agatston(image, labels, grid.spacing),
                   contrast_image=enhanced)  # fmt: skip


def fov_resampled(case: AltCase, matrix: int = 512, fov_mm: float = CARDIAC_FOV_MM) -> AltCase:
    """The cardiac field of view reconstructed on a `matrix` x `matrix` grid (resampled)."""
    crop = fov_crop(case, fov_mm)
    g = crop.grid
    pixel = g.shape[2] * g.spacing[2] / matrix
    spacing_xyz = (pixel, pixel, g.spacing[0])
    origin = (g.origin[0] - g.spacing[2] / 2 + pixel / 2, g.origin[1] - g.spacing[1] / 2 + pixel / 2,
              g.origin[2])  # fmt: skip
    size = (matrix, matrix, g.shape[0])

    def resample(array, interpolator, pixel_type):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((g.spacing[2], g.spacing[1], g.spacing[0]))
        image.SetOrigin(g.origin)
        out = sitk.Resample(image, size, sitk.Transform(), interpolator, origin, spacing_xyz,
                            (1, 0, 0, 0, 1, 0, 0, 0, 1), 0, pixel_type)  # fmt: skip
        return sitk.GetArrayFromImage(out)

    def resample_hu(array):
        hu = resample(array.astype(np.float32), sitk.sitkLinear, sitk.sitkFloat32)
        return np.clip(np.rint(hu), *HU_RANGE).astype(np.int16)

    image = resample_hu(crop.image)
    enhanced = None if crop.contrast_image is None else resample_hu(crop.contrast_image)
    labels = resample(crop.labels, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    grid = Grid((g.shape[0], matrix, matrix), (g.spacing[0], pixel, pixel), origin)
    acq = replace(crop.acquisition, matrix=matrix)
    return replace(crop, variant="fov_resampled", grid=grid, acquisition=acq, image=image,
                   labels=labels, truth=agatston(image, labels, grid.spacing),
                   contrast_image=enhanced)  # fmt: skip


def contrast_variant(case: AltCase) -> AltCase:
    """The contrast-enhanced image of a case made with AltOptions(contrast=True). Its truth is
    the unenhanced twin's (Agatston is not defined with iodine in the blood)."""
    if case.contrast_image is None:
        raise ValueError("the case was made without AltOptions(contrast=True)")
    variant = "contrast" if case.variant == "full" else f"{case.variant}_contrast"
    return replace(case, variant=variant, image=case.contrast_image, contrast_image=None)
