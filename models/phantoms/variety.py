"""How widely a phantom varies: generator version 2's ranges, and versions 3 and 4's broader ones.

Version 3 (issue 25, "breadth of training data") widens what the score network sees so that no
decision rests on one layout of the heart or one look of a lesion:

* heart: orientation +-30 deg (azimuth, elevation, roll; version 2: +-15), position +-35 mm
  around the usual place (+-25), and a size factor of 0.8-1.25 on top of the body's;
* body habitus: 230-480 mm wide (260-440);
* coronary courses: right (70 %), left (15 %) or co-dominant (15 %) circulation, the posterior
  descending artery from the RCA or the LCX accordingly; the LAD's angle, the LCX's and RCA's
  reach around the AV groove and the groove's level each over a wider range; tortuous vessels
  (a meander of up to 5 mm across the groove);
* lesion shapes: besides the eccentric wall plaque, spotty (one small nodule), elongated along
  the vessel, ring-like (around the wall), clustered (several small nodules) and thin
  partial-volume slivers; true densities log-uniform from 160 HU (peaks just above the 130 HU
  threshold after partial volume) to 1800 HU;
* devices: coronary stents (a bright tube over a vessel segment) and pacemaker leads (a metal
  wire through the superior vena cava and right atrium to the right ventricle), never counted;
* calcium where the aorta touches the arteries: aortic-wall calcium at the left main and RCA
  ostia, which a reader leaves out but which lies on the arteries' first millimetres.

Everything version 3 adds is drawn from a random stream of its own (`np.random.default_rng
([seed, 3])`), so version 2's draws, and with them every version-2 case, are unchanged; the
wider ranges only rescale version 2's draws (the same number of them, in the same order).

Version 4 is version 3 with fat around the heart (body habitus) and noisier sharp kernels. Versions 2 and 3 put the
pericardium straight against the lungs with 1.5-5 mm of epicardial fat, and the score network
trained on them learned that coronary calcium sits where the heart meets the lung: replacing the
lung next to the heart by fat, 8-25 mm deep, on held-out version-2 phantoms made it drop LCX,
then RCA and LAD calcium it had found (diagnosis of 2026-12-05, training/calcium/results/
fat_2.4/README.md). Real patients, the older ones whose calcium matters most, often carry
epicardial fat up to 10 mm and more in the grooves and pericardial (paracardiac) fat pads of a
few centimetres at the cardiophrenic angles and in front of the heart. Version 4 adds, from a
stream of its own (`np.random.default_rng([seed, 4])`, so version-3 cases are unchanged):

* epicardial fat 1.5-10 mm and groove fat 2-10 mm (versions 2 and 3: 1.5-5 and 2-6);
* in 75 % of cases a pericardial fat pad: an ellipsoid around the pericardium, up to 25 mm
  deeper along each of the heart's axes and shifted up to 10 mm forwards and down, painted as
  fat over the lung (and its vessels) it covers, nowhere else;
* sharp (lung) kernels 2-6 times as noisy as the soft kernel of the same scan, up to 120 HU
  (versions 2 and 3: twice, at most 40 HU). The real lung-kernel control
  (lung_pet_ct_dx_A0001, 5 mm) measures about 49 HU of local noise in soft tissue against 9.5 HU
  in its soft-kernel twin, five times as much, beyond anything versions 2 and 3 made at that
  thickness; on it the shipped 2.3 counted 46 AU of noise clusters (24 voxels, peaks 130-306 HU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Variety:
    """Ranges a case is sampled from (half-ranges in degrees and mm)."""

    body_width_mm: tuple[float, float] = (260.0, 440.0)
    heart_turn_deg: float = 15.0
    heart_shift_mm: float = 25.0
    heart_scale: tuple[float, float] = (1.0, 1.0)
    # Version 3's additions (coronary courses, lesion shapes, devices, ostial calcium).
    broad: bool = False
    # Version 4's additions: fat around the heart and noisier sharp kernels (needs `broad`).
    heart_fat: bool = False


STANDARD = Variety()
BROAD = Variety(
    body_width_mm=(230.0, 480.0),
    heart_turn_deg=30.0,
    heart_shift_mm=35.0,
    heart_scale=(0.8, 1.25),
    broad=True,
)
BROAD_WITH_FAT = replace(BROAD, heart_fat=True)  # version 4


def variety_for(generator: int) -> Variety:
    """The variety of a generator version (2 and 1: STANDARD, 3: BROAD, 4: BROAD_WITH_FAT)."""
    return BROAD_WITH_FAT if generator >= 4 else BROAD if generator == 3 else STANDARD


EPICARDIAL_FAT_MM = (1.5, 10.0)  # version 4 (versions 2 and 3: 1.5-5)
GROOVE_FAT_MM = (2.0, 10.0)  # version 4 (versions 2 and 3: 2-6)
PERICARDIAL_FAT_RATE = 0.75  # chance of a pericardial fat pad
PERICARDIAL_FAT_MM = 25.0  # the most it extends beyond the pericardium along each heart axis
PERICARDIAL_FAT_SHIFT_MM = 10.0  # the most its centre moves forwards and down
SHARP_NOISE_FACTOR = (2.0, 6.0)  # a sharp kernel's noise over the soft kernel's (2-3: 2)
MAX_NOISE_SD_HU = 120.0  # versions 2 and 3: 40


def sharp_kernel_noise_sd(rng: np.random.Generator, version_3_sd_hu: float) -> float:
    """Version 4's noise of a sharp-kernel scan from version 3's (twice the soft kernel's,
    clipped to 8-40 HU): the soft kernel's times 2-6, clipped to 8-120 HU."""
    factor = rng.uniform(*SHARP_NOISE_FACTOR)
    return float(np.clip(version_3_sd_hu * factor / 2.0, 8.0, MAX_NOISE_SD_HU))


def sample_heart_fat(rng: np.random.Generator) -> dict:
    """Version 4's fat around the heart: epicardial and groove fat (mm), and the pericardial
    fat pad's extension along the heart's axes (mm, zeros without a pad) and its shift
    forwards and down (mm)."""
    epicardial = float(rng.uniform(*EPICARDIAL_FAT_MM))
    groove = float(rng.uniform(*GROOVE_FAT_MM))
    has_pad = rng.random() < PERICARDIAL_FAT_RATE
    extension = rng.uniform(0.0, PERICARDIAL_FAT_MM, size=3) * has_pad
    shift = rng.uniform(0.0, PERICARDIAL_FAT_SHIFT_MM, size=2) * has_pad
    return {"epicardial": epicardial, "groove": groove, "pad_mm": extension,
            "pad_shift_mm": shift}  # fmt: skip


DOMINANCE = (("right", 0.70), ("left", 0.15), ("codominant", 0.15))
LESION_SHAPES = (
    ("plaque", 0.35),
    ("spotty", 0.15),
    ("elongated", 0.15),
    ("ring", 0.10),
    ("cluster", 0.15),
    ("sliver", 0.10),
)
LESION_DENSITY_HU = (160.0, 1800.0)  # log-uniform, before the kVp factor
STENT_RATE = 0.12  # chance of a coronary stent
LEAD_RATE = 0.08  # chance of a pacemaker (one or two leads)
OSTIAL_RATE = 0.25  # chance of aortic-wall calcium at a coronary ostium


def weighted_choice(rng: np.random.Generator, table: tuple[tuple[str, float], ...]) -> str:
    """One name from a (name, weight) table such as DOMINANCE or LESION_SHAPES."""
    names, weights = zip(*table, strict=True)
    return str(rng.choice(names, p=np.asarray(weights) / sum(weights)))
