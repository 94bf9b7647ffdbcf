"""CT numbers of the phantom's tissues and how they change with tube voltage.

Values are non-contrast HU at 120 kVp, from the usual textbook ranges (fat -120..-80, muscle and
blood 35..60, liver 55..65, cancellous bone 150..300, cortical bone 700..1200). Tissues whose
attenuation is dominated by calcium (bone, calcifications) rise at low kVp and fall at high kVp
because of the photo-electric effect; fat moves the other way, water-like tissue barely moves.
The factors are a linear fit to published phantom measurements of hydroxyapatite and fat
(roughly +35 % for calcium at 80 kVp, -10 % at 140 kVp); exactness is not the point, the spread
of calcium HU across protocols is.
"""

from __future__ import annotations

import numpy as np

AIR = -1000.0
LUNG = -860.0
FAT = -100.0
WATER = 0.0
CSF = 8.0
SOFT_TISSUE = 35.0
BLOOD = 40.0
MYOCARDIUM = 48.0
MUSCLE = 52.0
LIVER = 60.0
SPLEEN = 48.0
CARTILAGE = 110.0
CANCELLOUS_BONE = 220.0
CORTICAL_BONE = 950.0
TABLE_SHELL = 250.0
TABLE_FOAM = -930.0


def calcium_factor(kvp: float) -> float:
    """Multiplier for calcium-like (bone, calcification) HU relative to 120 kVp."""
    return float(np.interp(kvp, [80.0, 100.0, 120.0, 140.0], [1.35, 1.15, 1.0, 0.9]))


def fat_factor(kvp: float) -> float:
    """Multiplier for fat HU relative to 120 kVp (fat looks darker at low kVp)."""
    return float(np.interp(kvp, [80.0, 120.0, 140.0], [1.15, 1.0, 0.95]))
