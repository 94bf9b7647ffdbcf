"""The result of scoring one CT for coronary calcium, without torch.

Kept apart from inference.py so that the node's result builders (SR, SEG, overlay) and any
process that only receives can use the type without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk

from models.agatston import CATEGORY_NAMES


@dataclass
class CalciumResult:
    agatston_total: float
    agatston_per_artery: dict[str, float]
    category: int
    cacdrs: str
    flags: list[str]
    heart_centre_mm: list[float]
    transform: dict
    feedback: dict[str, sitk.Image] = field(repr=False)
    seconds: float = 0.0
    device: str = "cpu"
    model: str = ""
    # What the network put outside the coronary region and was not counted (Agatston units).
    outside_region_au: float = 0.0
    # How agatston_total, per artery, category and feedback were measured: "exact" (the
    # network labels the scan's candidate voxels, models.agatston scores them) or "regression"
    # (the network's map summed: paper A's direct regression).
    method: str = "regression"
    # Calcium volume (mm^3) of the counted voxels: the exact method only (None otherwise).
    volume_mm3_total: float | None = None
    volume_mm3_per_artery: dict[str, float] = field(default_factory=dict)
    # The direct regression's figures, filled whenever the score network ran (whatever the
    # method), so the two can be compared on every scan.
    regression_total: float | None = None
    regression_per_artery: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "agatston_total": round(self.agatston_total, 2),
            "agatston_per_artery": {k: round(v, 2) for k, v in self.agatston_per_artery.items()},
            "category": self.category,
            "category_name": CATEGORY_NAMES[self.category],
            "cacdrs": self.cacdrs,
            "flags": list(self.flags),
            "heart_centre_mm": [round(v, 1) for v in self.heart_centre_mm],
            "registration": self.transform,
            "outside_region_au": round(self.outside_region_au, 2),
            "method": self.method,
            "volume_mm3_total": _rounded(self.volume_mm3_total),
            "volume_mm3_per_artery": {
                k: round(v, 2) for k, v in self.volume_mm3_per_artery.items()
            },
            "regression_total": _rounded(self.regression_total),
            "regression_per_artery": {
                k: round(v, 2) for k, v in self.regression_per_artery.items()
            },
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "model": self.model,
        }

    def feedback_total(self) -> sitk.Image | None:
        """Sum of the artery maps (a sub-grid of the scan; see paste_into_scan)."""
        total = None
        for image in self.feedback.values():
            total = image if total is None else total + image
        return total


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def empty_scan_map(ct: sitk.Image) -> sitk.Image:
    """A zero float image on the scan's grid (the feedback of a scan without any)."""
    full = sitk.Image(ct.GetSize(), sitk.sitkFloat32)
    full.CopyInformation(ct)
    return full


def paste_into_scan(part: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """A feedback image (a sub-grid of the scan) pasted into a zero image of the whole scan."""
    full = empty_scan_map(ct)
    index = [int(round(v)) for v in ct.TransformPhysicalPointToContinuousIndex(part.GetOrigin())]
    return sitk.Paste(full, part, part.GetSize(), [0, 0, 0], index)
