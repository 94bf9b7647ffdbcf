"""The result of scoring one CT for coronary calcium, without torch.

Kept apart from inference.py so that the node's result builders (SR, SEG, overlay) and any
process that only receives can use the type without importing torch.

Honest uncertainty: a result either has a risk category that may be shown, or it is
*indeterminate*. It is indeterminate when it was not scored at all (a contrast-enhanced series:
Agatston scoring is not defined there, models/calcium/contrast.py) or when a quality flag says
the score cannot be trusted (UNTRUSTED_FLAGS: the heart was not found or not wholly in the
scan). `category`/`cacdrs` hold what the measured total falls into (for evaluation and for the
record); what the SR, the overlay, the job log and `ctnode score` show is `reported_category` /
`reported_cacdrs`, None when indeterminate. The measured number of an untrusted result is kept,
marked as not valid wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import SimpleITK as sitk

from models.agatston import CATEGORY_NAMES

CONTRAST_FLAG = "contrast_enhanced"
EXCESS_NOISE_FLAG = "excess_image_noise"  # models.calcium.noise: too noisy for 130 HU
# Flags under which the score cannot be trusted: the located heart is not the heart
# (registration_failure), the heart is cut by the scan's edges (heart_outside_field_of_view
# from the registration, heart_not_in_field_of_view from the organ segmentation's heart check,
# node.pipelines.organs.HEART_FLAG), the series is contrast-enhanced, or its image noise is
# above what the Agatston threshold tolerates (excess_image_noise: a lung or bone kernel).
# `too_few_slices` is not among them: a short scan that still holds the heart is scored as it is.
UNTRUSTED_FLAGS = (
    "registration_failure",
    "heart_outside_field_of_view",
    "heart_not_in_field_of_view",
    CONTRAST_FLAG,
    EXCESS_NOISE_FLAG,
)
INDETERMINATE = "indeterminate"


@dataclass
class CalciumResult:
    agatston_total: float | None  # None: not scored (a contrast-enhanced series)
    agatston_per_artery: dict[str, float]  # empty when not scored
    category: int | None  # of the measured total, trusted or not; None when not scored
    cacdrs: str | None  # likewise; show reported_category / reported_cacdrs
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
    # The contrast assessment (models.calcium.contrast.ContrastAssessment.to_dict()).
    contrast: dict | None = None
    # The image noise assessment (models.calcium.noise.NoiseAssessment.to_dict()).
    noise: dict | None = None

    @classmethod
    def not_scored(
        cls,
        flags: Sequence[str],
        heart_centre_mm: Sequence[float],
        transform: dict,
        contrast: dict,
        **rest,
    ) -> CalciumResult:
        """The result of a contrast-enhanced series: located, assessed, never scored."""
        return cls(
            agatston_total=None,
            agatston_per_artery={},
            category=None,
            cacdrs=None,
            flags=[*flags, *([] if CONTRAST_FLAG in flags else [CONTRAST_FLAG])],
            heart_centre_mm=[float(v) for v in heart_centre_mm],
            transform=transform,
            feedback={},
            contrast=contrast,
            **rest,
        )

    @property
    def scored(self) -> bool:
        return self.agatston_total is not None

    @property
    def untrusted_flags(self) -> list[str]:
        return [flag for flag in self.flags if flag in UNTRUSTED_FLAGS]

    @property
    def indeterminate(self) -> bool:
        """No risk category may be shown (not scored, or an untrusted flag)."""
        return not self.scored or bool(self.untrusted_flags)

    @property
    def reported_category(self) -> int | None:
        return None if self.indeterminate else self.category

    @property
    def reported_cacdrs(self) -> str | None:
        return None if self.indeterminate else self.cacdrs

    @property
    def category_name(self) -> str:
        """The reported category as shown: "0" ... ">400", or "indeterminate"."""
        category = self.reported_category
        return INDETERMINATE if category is None else CATEGORY_NAMES[category]

    def to_dict(self) -> dict:
        return {
            "scored": self.scored,
            "agatston_total": _rounded(self.agatston_total),
            "agatston_per_artery": {k: round(v, 2) for k, v in self.agatston_per_artery.items()},
            # What may be shown: None and "indeterminate" when the score cannot be trusted.
            "indeterminate": self.indeterminate,
            "category": self.reported_category,
            "category_name": self.category_name,
            "cacdrs": self.reported_cacdrs,
            # What the measured total falls into, trusted or not (None: not scored).
            "measured_category": self.category,
            "measured_cacdrs": self.cacdrs,
            "flags": list(self.flags),
            "untrusted_flags": self.untrusted_flags,
            "contrast": self.contrast,
            "noise": self.noise,
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
