"""Header records -> stacks (one volume each), and what was left out and why.

A stack is the set of 2-D images that can form one volume: one series, one orientation, one
image size and pixel spacing, one reconstruction kernel. Image type and acquisition number
split a series only where they have to: when the images of the series occupy the same
positions twice (a series holding two reconstructions or a repeated acquisition). A GE head
protocol whose thin posterior-fossa images are typed ADD and the rest AXIAL, or one
acquisition number per rotation of a step-and-shoot scan, stays one volume.

Everything that is not made a stack is reported with a reason: localizers, Secondary
Captures, dose reports and other non-image objects, objects the node made itself
(Manufacturer "ctnode"), images without geometry, and non-axial reformats unless allowed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from node.volume.headers import CT_STORAGE, FrameHeader, Unreadable, scan_files, scan_paths

NODE_MANUFACTURER = "ctnode"  # what the node writes into the objects it creates
ORIENTATION_TOLERANCE = 1e-3  # direction cosines closer than this are the same orientation
POSITION_DECIMALS = 2  # positions equal to 0.01 mm are the same slice position
AXIAL_MIN_COS = math.cos(math.radians(45))  # slice normal within 45 deg of z: axial (tilt too)

SOP_CLASS_REASONS = {
    "1.2.840.10008.1.3.10": "DICOMDIR index file",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture (screen shot, not a CT slice)",
    "1.2.840.10008.5.1.4.1.1.7.1": "Secondary Capture (screen shot, not a CT slice)",
    "1.2.840.10008.5.1.4.1.1.7.2": "Secondary Capture (screen shot, not a CT slice)",
    "1.2.840.10008.5.1.4.1.1.7.3": "Secondary Capture (screen shot, not a CT slice)",
    "1.2.840.10008.5.1.4.1.1.7.4": "Secondary Capture (screen shot, not a CT slice)",
    "1.2.840.10008.5.1.4.1.1.88.67": "radiation dose report (X-Ray Radiation Dose SR)",
    "1.2.840.10008.5.1.4.1.1.88.68": "radiation dose report (Radiopharmaceutical Dose SR)",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation (SEG), not a CT image",
    "1.2.840.10008.5.1.4.1.1.88.33": "structured report, not a CT image",
    "1.2.840.10008.5.1.4.1.1.88.34": "structured report, not a CT image",
    "1.2.840.10008.5.1.4.1.1.88.22": "structured report, not a CT image",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state, not a CT image",
}
LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW"})
DOSE_TYPES = frozenset({"DOSE_INFO", "DOSE REPORT", "DOSE_REPORT", "SCREEN SAVE"})


@dataclass
class Stack:
    """Images that form one volume, in no particular order (assembly sorts them)."""

    label: str  # short, PHI-free name: series number plus a part number where split
    frames: list[FrameHeader]
    split_by: tuple[str, ...] = ()  # attributes that split its series, for the report

    @property
    def first(self) -> FrameHeader:
        return self.frames[0]

    @property
    def name(self) -> str:
        """File-name-safe name: label and kernel (what `ctnode inspect --export` writes)."""
        kernel = re.sub(r"[^A-Za-z0-9]+", "-", self.first.kernel).strip("-")
        return f"{self.label}_{kernel}" if kernel else self.label

    @property
    def series_uid(self) -> str:
        return self.first.series_uid

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.first.orientation)  # type: ignore[arg-type]

    @property
    def plane(self) -> str:
        return plane_name(self.normal)

    @property
    def thickness(self) -> float | None:
        values = [f.slice_thickness for f in self.frames if f.slice_thickness]
        return float(np.median(values)) if values else None


@dataclass(frozen=True)
class Exclusion:
    """Images left out of every stack: which series, how many, why."""

    label: str
    series_uid: str
    count: int
    reason: str


@dataclass
class StackScan:
    stacks: list[Stack]
    excluded: list[Exclusion] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def plane_name(normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal)))
    if axis == 2 and abs(normal[2]) >= AXIAL_MIN_COS:
        return "axial"
    return ("sagittal", "coronal", "axial")[axis]


def find_stacks(root: Path, *, allow_reformats: bool = False) -> StackScan:
    """Stacks and exclusions for every DICOM file below `root`."""
    frames, unreadable = scan_paths(root)
    return group_stacks(frames, allow_reformats=allow_reformats, unreadable=unreadable)


def stacks_of_files(paths: Iterable[Path], *, allow_reformats: bool = False) -> StackScan:
    """Stacks and exclusions for the given files (a series' instances as the database lists
    them), whatever else lies in their folders."""
    frames, unreadable = scan_files(paths)
    return group_stacks(frames, allow_reformats=allow_reformats, unreadable=unreadable)


def group_stacks(
    frames: list[FrameHeader],
    *,
    allow_reformats: bool = False,
    unreadable: list[Unreadable] | None = None,
) -> StackScan:
    excluded: dict[tuple[str, str, str], list[FrameHeader]] = defaultdict(list)
    by_series: dict[Hashable, list[FrameHeader]] = defaultdict(list)
    for frame in frames:
        reason = exclusion_reason(frame)
        if reason:
            excluded[(_series_label(frame), frame.series_uid, reason)].append(frame)
        else:
            by_series[series_key(frame)].append(frame)

    stacks: list[Stack] = []
    for series in by_series.values():
        parts = _split_series(series)
        for index, (part, split_by) in enumerate(parts, start=1):
            label = _series_label(part[0]) + (f".{index}" if len(parts) > 1 else "")
            stack = Stack(label, part, split_by)
            reason = stack_exclusion_reason(stack, allow_reformats)
            if reason:
                excluded[(label, stack.series_uid, reason)].extend(part)
            else:
                stacks.append(stack)
    _make_labels_unique(stacks)
    stacks.sort(key=lambda s: (s.first.series_number or 0, s.label))
    exclusions = [
        Exclusion(label, uid, len(group), reason)
        for (label, uid, reason), group in sorted(excluded.items())
    ]
    return StackScan(stacks, exclusions, list(unreadable or []))


def exclusion_reason(frame: FrameHeader) -> str | None:
    """Why one image cannot be part of a CT volume, or None."""
    if frame.sop_class in SOP_CLASS_REASONS:
        return SOP_CLASS_REASONS[frame.sop_class]
    if frame.manufacturer.strip().lower() == NODE_MANUFACTURER:
        return "derived object made by this node (Manufacturer ctnode)"
    if frame.sop_class and frame.sop_class not in CT_STORAGE:
        return f"not a CT image (SOP class {frame.sop_class})"
    if not frame.sop_class and frame.modality not in ("CT", ""):
        return f"not a CT image (modality {frame.modality})"
    if frame.pixels is None:
        return "no pixel data"
    if LOCALIZER_TYPES & set(frame.image_type):
        return "localizer (scout) image"
    if DOSE_TYPES & set(frame.image_type) or "DOSE" in frame.series_description.upper():
        return "dose report image"
    if frame.position is None or frame.orientation is None or frame.pixel_spacing is None:
        return "no image position, orientation or pixel spacing"
    if frame.pixels.samples_per_pixel != 1:
        return "colour image (not CT numbers)"
    return None


def stack_exclusion_reason(stack: Stack, allow_reformats: bool) -> str | None:
    if len(stack.frames) < 2:
        return "a single image, not a volume"
    if stack.plane != "axial" and not allow_reformats:
        return f"{stack.plane} reformat (non-axial stacks are not assembled unless configured)"
    return None


def series_key(frame: FrameHeader) -> Hashable:
    """The series an image belongs to: its Series Instance UID, or, where that is missing or
    empty (anonymisers and some exports strip it), what is left that a series shares."""
    if frame.series_uid:
        return ("uid", frame.series_uid)
    return (
        "no-uid",
        frame.study_uid,
        frame.frame_of_reference,
        frame.series_number,
        frame.modality,
    )


def _series_label(frame: FrameHeader) -> str:
    return f"S{frame.series_number}" if frame.series_number is not None else "S-"


def _orientation_key(orientation: tuple[float, ...] | None) -> tuple[int, ...]:
    # Rounded to the tolerance; near-identical orientations differ by float noise only.
    return tuple(round(v / ORIENTATION_TOLERANCE) for v in orientation or ())


def _volume_key(frame: FrameHeader) -> Hashable:
    spacing = tuple(round(v, 4) for v in frame.pixel_spacing or ())
    return (_orientation_key(frame.orientation), frame.rows, frame.columns, spacing, frame.kernel)


def _has_duplicate_positions(frames: list[FrameHeader]) -> bool:
    seen = set()
    for frame in frames:
        key = tuple(round(v, POSITION_DECIMALS) for v in frame.position or ())
        if key in seen:
            return True
        seen.add(key)
    return False


CONFLICT_SPLITS: tuple[tuple[str, Callable[[FrameHeader], Hashable]], ...] = (
    ("image type", lambda f: f.image_type),
    ("acquisition", lambda f: f.acquisition_number),
)


def _split_series(series: list[FrameHeader]) -> list[tuple[list[FrameHeader], tuple[str, ...]]]:
    """Split one series into volumes: always by geometry and kernel, by image type and
    acquisition only where the images would otherwise occupy a position twice."""
    groups: dict[Hashable, list[FrameHeader]] = defaultdict(list)
    for frame in series:
        groups[_volume_key(frame)].append(frame)
    split_by = ("orientation/size/kernel",) if len(groups) > 1 else ()
    parts = [(group, split_by) for group in groups.values()]
    for name, key in CONFLICT_SPLITS:
        refined = []
        for group, reasons in parts:
            values: dict[Hashable, list[FrameHeader]] = defaultdict(list)
            for frame in group:
                values[key(frame)].append(frame)
            resolves = len(values) > 1 and _has_duplicate_positions(group)
            if resolves:
                refined.extend((sub, (*reasons, name)) for sub in values.values())
            else:
                refined.append((group, reasons))
        parts = refined
    parts.sort(key=lambda p: min(f.instance_number or 0 for f in p[0]))
    return parts


def _make_labels_unique(stacks: list[Stack]) -> None:
    """Two series with the same number (or none) get a short hash of their UID appended."""
    counts: dict[str, int] = defaultdict(int)
    for stack in stacks:
        counts[stack.label] += 1
    for stack in stacks:
        if counts[stack.label] > 1:
            source = stack.series_uid or str(series_key(stack.first))
            stack.label += "-" + hashlib.sha1(source.encode()).hexdigest()[:6]
