"""Scan parameters of a case: tube voltage, kernel, slices, field of view, patient position,
noise level; and how the tube voltage moves the HU of calcium, bone and iodine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

KVPS = (80, 100, 120, 140)
KVP_WEIGHTS = (0.1, 0.3, 0.45, 0.15)
# HU of calcium / bone and of iodine relative to 120 kVp: both rise at low voltage as the
# photoelectric effect grows, iodine more (its K-edge is at 33 keV), after the attenuation
# tables used for dual-energy calibration (e.g. McCollough et al., Radiology 2015).
CALCIUM_FACTOR = {80: 1.28, 100: 1.12, 120: 1.0, 140: 0.93}
IODINE_FACTOR = {80: 1.6, 100: 1.27, 120: 1.0, 140: 0.86}
FAT_SHIFT_HU = {80: -15.0, 100: -6.0, 120: 0.0, 140: 3.0}

# (nominal thickness, increment) mm: contiguous, overlapping and thin reconstructions.
PROTOCOLS = (
    (0.625, 0.5), (0.75, 0.6), (1.0, 0.7), (1.0, 1.0), (1.25, 1.0), (1.5, 1.0), (2.0, 1.5),
    (2.5, 2.5), (3.0, 1.5), (3.0, 2.5), (3.0, 3.0), (5.0, 2.5), (5.0, 5.0),
)  # fmt: skip
PROTOCOL_WEIGHTS = (1, 1, 1, 2, 1, 2, 1, 2, 2, 3, 3, 1, 1)
SOFT_KERNELS = ("B35f", "STANDARD", "FC12", "Br40")
SHARP_KERNELS = ("B70f", "LUNG", "FC52", "BONE")
POSITIONS = ("HFS", "FFS", "HFP", "FFP")
POSITION_WEIGHTS = (0.7, 0.15, 0.1, 0.05)
MAX_SLICES = 260  # thin protocols get a larger increment beyond this (generation time)


@dataclass(frozen=True)
class Acquisition:
    kvp: int
    kernel: str  # "soft" or "sharp": the resolution and noise texture
    kernel_name: str  # as written to DICOM (ConvolutionKernel)
    thickness_mm: float
    increment_mm: float
    fov_mm: float
    matrix: int
    position: str  # HFS, FFS, HFP, FFP
    noise_sd_hu: float

    @property
    def pixel_mm(self) -> float:
        return self.fov_mm / self.matrix

    def to_dict(self) -> dict:
        return {**asdict(self), "pixel_mm": self.pixel_mm}


def sample_position(rng: np.random.Generator) -> str:
    return str(rng.choice(POSITIONS, p=POSITION_WEIGHTS))


def sample_acquisition(
    rng: np.random.Generator,
    position: str,
    body_width_mm: float,
    water_diameter_mm: float,
    matrix: int,
) -> Acquisition:
    kvp = int(rng.choice(KVPS, p=KVP_WEIGHTS))
    sharp = rng.random() < 0.3
    names = SHARP_KERNELS if sharp else SOFT_KERNELS
    p = np.asarray(PROTOCOL_WEIGHTS, float)
    thickness, increment = PROTOCOLS[rng.choice(len(PROTOCOLS), p=p / p.sum())]
    fov = float(np.clip(body_width_mm + rng.uniform(20, 70), 300, 450))
    # Noise: about 11 HU at 120 kVp, 3 mm, soft kernel, 30 cm water-equivalent diameter;
    # doubling every 16 cm of water (tube-current modulation makes it less than the 8 cm of a
    # fixed current), higher at low voltage, 1/sqrt(thickness), about 2.8x for sharp kernels.
    sd = 11.0 * (120 / kvp) ** 1.4 * 2 ** ((water_diameter_mm - 300) / 160)
    sd *= math.sqrt(3.0 / thickness) * (2.8 if sharp else 1.0) * rng.uniform(0.8, 1.25)
    return Acquisition(
        kvp=kvp,
        kernel="sharp" if sharp else "soft",
        kernel_name=str(rng.choice(names)),
        thickness_mm=float(thickness),
        increment_mm=float(increment),
        fov_mm=round(fov, 1),
        matrix=matrix,
        position=position,
        noise_sd_hu=float(np.clip(sd, 5.0, 90.0)),
    )
