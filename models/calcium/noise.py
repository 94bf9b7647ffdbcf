"""Is a CT series too noisy for the Agatston threshold? Then its score is not trusted.

The Agatston definition counts every voxel of 130 HU or more. It assumes the image noise of a
calcium-scoring reconstruction (a standard soft-tissue kernel): the international standard
for calcium quantification prescribes tube currents that give about 20 HU of noise (23 HU in
large patients; McCollough et al., Radiology 2007;243:527-538), and 428 patients scanned
for calcium scoring with tube-current control had 10-32 HU (Acad Radiol 2009, S1076-6332(09)
00262-1). A lung or bone kernel is several times noisier and overshoots at edges: unenhanced
blood (about 40 HU) then reaches 130 HU in many voxels and small dense structures become
spikes of several hundred HU, so the scan's own voxels no longer measure calcium (the real
lung-kernel control lung_pet_ct_dx_A0001, no coronary calcium, measures 41 HU of noise here
and 124 AU with model 2.4, against 7.5 HU and 0 AU for the soft kernel of the same
acquisition). Smoothing it to a standard kernel's noise does not rescue the score: the
smoothing that removes those spikes (1 mm in-plane) also drops the peaks of small true
lesions below 130 HU (docs/models/calcium.md, "Image noise").

The statistic: the robust standard deviation (1.4826 x the median absolute deviation) of the
difference between the image and its in-plane Gaussian smoothing (4 mm), over the homogeneous
soft tissue in a 40 mm sphere around the located heart centre (sphere.py): voxels whose
smoothed value lies in 0-100 HU (blood, myocardium) where the smoothed image is flat (gradient
under 3 HU/mm, no organ edge). On phantoms of both styles with known noise (soft and sharp
kernels, 7-111 HU) it measured the generators' noise within 5 % (docs/models/calcium.md).

Limit: above 35 HU the score is flagged `excess_image_noise` (an untrusted flag: the measured
number is kept, marked not valid, and no risk category is given). 35 HU lies above the highest
noise reported for calcium-scoring scans (32 HU) and 1.5 x the standard's 23 HU for large
patients; at 35 HU a blood voxel reaches 130 HU with a probability of 0.5 % (Gaussian noise),
about 1,500 voxels of a coronary region's 300,000 soft-tissue voxels, against one at 20 HU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from models.calcium.result import EXCESS_NOISE_FLAG
from models.calcium.sphere import SPHERE_RADIUS_MM, sphere_box

__all__ = ["EXCESS_NOISE_FLAG", "NOISE_LIMIT_HU", "NoiseAssessment", "assess_noise", "noise_sd_hu"]

NOISE_LIMIT_HU = 35.0
SMOOTHING_SIGMA_MM = 4.0  # in-plane; the residual keeps the noise of soft and sharp kernels
SOFT_TISSUE_HU = (0.0, 100.0)
MAX_GRADIENT_HU_PER_MM = 3.0
MIN_MEASURED_ML = 5.0  # fewer homogeneous soft-tissue voxels: not measurable
MAD_TO_SD = 1.4826  # the median absolute deviation of a Gaussian is 0.6745 SD


@dataclass(frozen=True)
class NoiseAssessment:
    """The measured image noise around the heart and whether it exceeds the limit."""

    sd_hu: float | None  # None: not measurable (the sphere is off the heart or the scan)

    @property
    def excessive(self) -> bool:
        return self.sd_hu is not None and self.sd_hu > NOISE_LIMIT_HU

    def to_dict(self) -> dict:
        return {
            "sd_hu": None if self.sd_hu is None else round(self.sd_hu, 1),
            "limit_hu": NOISE_LIMIT_HU,
            "excessive": self.excessive,
        }


def _smooth_in_plane(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    smoothed = sitk.Cast(image, sitk.sitkFloat32)
    for axis in (0, 1):  # x and y of the volume; slices are not mixed
        smoothed = sitk.RecursiveGaussian(smoothed, sigma_mm, direction=axis)
    return smoothed


def noise_sd_hu(ct: sitk.Image, heart_centre_mm: Sequence[float]) -> float | None:
    """The image noise (HU, one standard deviation) around the heart centre (see the module
    docstring); None when the sphere holds under MIN_MEASURED_ML of homogeneous soft tissue."""
    sphere = sphere_box(ct, heart_centre_mm, SPHERE_RADIUS_MM)
    if sphere is None:
        return None
    raw = sitk.GetArrayFromImage(sphere.image).astype(np.float32)
    smooth = sitk.GetArrayFromImage(_smooth_in_plane(sphere.image, SMOOTHING_SIGMA_MM))
    spacing_x, spacing_y = sphere.image.GetSpacing()[:2]
    gradient_y, gradient_x = np.gradient(smooth, spacing_y, spacing_x, axis=(1, 2))
    flat = np.hypot(gradient_y, gradient_x) < MAX_GRADIENT_HU_PER_MM
    soft = (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    residual = (raw - smooth)[sphere.inside & soft & flat]
    if residual.size * sphere.voxel_ml < MIN_MEASURED_ML:
        return None
    return MAD_TO_SD * float(np.median(np.abs(residual - np.median(residual))))


def assess_noise(ct: sitk.Image, heart_centre_mm: Sequence[float]) -> NoiseAssessment:
    return NoiseAssessment(sd_hu=noise_sd_hu(ct, heart_centre_mm))
