"""Which stack of a study to score for coronary calcium, and why every other one was not.

Rules, in order (a stack failing a rule is not chosen, with that rule as its reason):

1. axial: the slice normal within 45 degrees of the body axis (a tilted gantry is axial);
2. covers the heart: not a head/neck/extremity body part, and at least 100 mm along z;
3. at least 10 slices (a handful of slices is a test or a localizer-like series).

Among the stacks that pass, the best is the first by:

a. non-contrast before contrast-enhanced (Contrast/Bolus Agent (0018,0010) or Route
   (0018,1040) naming one): Agatston thresholds assume unenhanced blood, iodine in the
   coronaries counts as calcium. A contrast-enhanced stack is still chosen when it is the only
   one: the scorer's contrast gate (models/calcium/contrast.py) then withholds the score and the
   job reports "not scorable: contrast-enhanced" instead of failing;
b. kernel: soft-tissue (Siemens B/Br/I/Q below 50, GE STANDARD/SOFT, Philips A-C, Canon/Toshiba
   FC below 50) before unknown before sharp or lung kernels (their noise and edge overshoot
   push voxels over 130 HU: false calcium);
c. slice thickness nearest the 2.5-3.0 mm of the calcium-scoring protocol (0 inside it);
d. more z coverage, then lower series number (stable order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from models.calcium.contrast import header_names_contrast
from node.volume.stacks import Stack

AXIAL = "axial"
MIN_COVERAGE_MM = 100.0
MIN_SLICES = 10
THICKNESS_RANGE_MM = (2.5, 3.0)
NOT_CHEST = ("HEAD", "BRAIN", "SKULL", "NECK", "EXTREMITY", "KNEE", "HAND", "FOOT", "PELVIS")

SOFT, UNKNOWN, SHARP = "soft", "unknown", "sharp"
SHARP_WORDS = ("LUNG", "BONE", "EDGE", "SHARP", "DETAIL", "ULTRA", "HR")
SOFT_WORDS = ("STANDARD", "STD", "SOFT", "BODY", "SMOOTH", "CARDIAC")
PHILIPS_SOFT = {"A", "B", "C", "UA", "UB", "UC", "CB"}
PHILIPS_SHARP = {"D", "E", "L", "LA", "YA", "YB", "YC", "YD", "YE", "YF"}
NUMBERED_KERNEL = re.compile(r"^(?:[BIQDHJTVU][RLFSV]?|FC)(\d{2})")


@dataclass(frozen=True)
class Candidate:
    stack: Stack
    coverage_mm: float
    n_slices: int


@dataclass
class SelectionPlan:
    chosen: Stack | None
    reasons: dict[str, str] = field(default_factory=dict)  # stack label -> why (not) chosen


def kernel_class(kernel: str) -> str:
    """soft / sharp / unknown from the vendor's kernel name (first value if multi-valued)."""
    name = kernel.split("\\")[0].strip().upper()
    if not name:
        return UNKNOWN
    if name in PHILIPS_SOFT:
        return SOFT
    if name in PHILIPS_SHARP:
        return SHARP
    match = NUMBERED_KERNEL.match(name)
    if match:  # Siemens B30f/Br38/I26f/Qr40, Canon/Toshiba FC03/FC52: sharpness number
        return SHARP if int(match.group(1)) >= 50 else SOFT
    if any(word in name for word in SHARP_WORDS):
        return SHARP
    if any(word in name for word in SOFT_WORDS):
        return SOFT
    return UNKNOWN


def thickness_distance(thickness: float | None) -> float:
    if thickness is None:
        return 10.0  # unknown thickness ranks after any stated one
    low, high = THICKNESS_RANGE_MM
    return max(low - thickness, thickness - high, 0.0)


def rejection(candidate: Candidate) -> str | None:
    stack = candidate.stack
    first = stack.first
    if stack.plane != AXIAL:
        return f"not axial ({stack.plane})"
    if first.body_part and any(part in first.body_part for part in NOT_CHEST):
        return f"does not cover the heart (body part {first.body_part})"
    if candidate.coverage_mm < MIN_COVERAGE_MM:
        return (
            f"does not cover the heart ({candidate.coverage_mm:.0f} mm < {MIN_COVERAGE_MM:.0f} mm)"
        )
    if candidate.n_slices < MIN_SLICES:
        return f"only {candidate.n_slices} slices"
    return None


def is_contrast_enhanced(stack: Stack) -> bool:
    """Whether the stack's header names a contrast agent or route."""
    first = stack.first
    return header_names_contrast(first.contrast_agent) or header_names_contrast(
        first.contrast_route
    )


def _rank(candidate: Candidate) -> tuple:
    order = {SOFT: 0, UNKNOWN: 1, SHARP: 2}[kernel_class(candidate.stack.first.kernel)]
    return (
        is_contrast_enhanced(candidate.stack),
        order,
        thickness_distance(candidate.stack.thickness),
        -candidate.coverage_mm,
        candidate.stack.first.series_number or 0,
        candidate.stack.label,
    )


def select_for_calcium(candidates: list[Candidate]) -> SelectionPlan:
    """The stack to score (or None) and a reason for every stack."""
    plan = SelectionPlan(chosen=None)
    eligible = []
    for candidate in candidates:
        reason = rejection(candidate)
        if reason:
            plan.reasons[candidate.stack.label] = reason
        else:
            eligible.append(candidate)
    eligible.sort(key=_rank)
    if not eligible:
        return plan
    best = eligible[0]
    plan.chosen = best.stack
    plan.reasons[best.stack.label] = "chosen: " + _describe(best)
    for other in eligible[1:]:
        plan.reasons[other.stack.label] = "not chosen: " + _versus(other, best)
    return plan


def _describe(candidate: Candidate) -> str:
    stack = candidate.stack
    thickness = f"{stack.thickness:g} mm" if stack.thickness else "unknown thickness"
    kernel = stack.first.kernel or "no kernel"
    return (
        f"{kernel_class(stack.first.kernel)} kernel ({kernel}), {thickness}, "
        f"{candidate.coverage_mm:.0f} mm axial coverage, "
        + (
            "contrast-enhanced (header): the score will be withheld"
            if is_contrast_enhanced(stack)
            else "non-contrast"
        )
    )


def _versus(other: Candidate, best: Candidate) -> str:
    mine, theirs = _rank(other), _rank(best)
    if mine[0] != theirs[0]:
        return f"contrast-enhanced (header); {best.stack.label} is not"
    mine, theirs = mine[1:], theirs[1:]
    if mine[0] != theirs[0]:
        return (
            f"{kernel_class(other.stack.first.kernel)} kernel ({other.stack.first.kernel}); "
            f"{best.stack.label} has a {kernel_class(best.stack.first.kernel)} kernel"
        )
    if mine[1] != theirs[1]:
        return f"slice thickness further from {THICKNESS_RANGE_MM[0]}-{THICKNESS_RANGE_MM[1]} mm"
    if mine[2] != theirs[2]:
        return f"less z coverage than {best.stack.label}"
    return f"equivalent to {best.stack.label}, which has the lower series number"


def select_for_organs(candidates: list[Candidate]) -> SelectionPlan:
    """The stack to segment into organs: the calcium choice when there is one (both pipelines
    then see the same volume, so a calcium heart check can reuse the segmentation); otherwise
    the best axial stack of at least MIN_SLICES slices by the same ranking, contrast-enhanced
    and short ones included (organ segmentation needs neither non-contrast nor the heart)."""
    plan = select_for_calcium(candidates)
    if plan.chosen is not None:
        return plan
    eligible = []
    for candidate in candidates:
        if candidate.stack.plane != AXIAL:
            plan.reasons[candidate.stack.label] = f"not axial ({candidate.stack.plane})"
        elif candidate.n_slices < MIN_SLICES:
            plan.reasons[candidate.stack.label] = f"only {candidate.n_slices} slices"
        else:
            eligible.append(candidate)
    if eligible:
        best = min(eligible, key=_rank)
        plan.chosen = best.stack
        plan.reasons[best.stack.label] = (
            f"chosen for organs: {best.n_slices} axial slices, {best.coverage_mm:.0f} mm"
        )
    return plan
