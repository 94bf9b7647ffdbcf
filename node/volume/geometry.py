"""A stack's geometry from its headers alone: slice order, duplicates, holes, spacing, tilt.

The plan says which input slice goes where in the output volume and whether the volume has
to be resampled (variable spacing, filled holes, gantry tilt). It reads no pixels, so
`ctnode inspect` can show it for any folder quickly.

Conventions: DICOM patient coordinates (LPS, mm). Row direction r and column direction c are
the ImageOrientationPatient cosines, the slice normal n = r x c. Slices are ordered by their
position along n (never by instance number), so the volume's direction matrix is [r c n],
right-handed, with positive spacing, whatever the table direction (head- or feet-first).

Gantry tilt: the slices are parallel but each is displaced along c relative to the previous
one (the table moves along z, the slice plane is tilted). Like dcm2niix, the stack is
de-sheared: every slice is shifted along c by its own displacement (linear interpolation
within the slice only), which gives an orthogonal grid whose slices are still the acquired
planes; the row count grows so that no data is cut off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from node.volume.headers import FrameHeader
from node.volume.stacks import Stack, slice_normal

log = logging.getLogger(__name__)

DUPLICATE_MM = 0.01  # slices closer than this along the normal share one position
UNIFORM_MM = 0.02  # gaps within this of each other count as one spacing (scanner rounding)
MISSING_FACTOR = 1.5  # a gap above 1.5x its neighbours' spacing means missing slices
SHEAR_PIXELS = 0.05  # in-plane drift over the stack below this is ignored (float noise)
MAX_SLICE_FACTOR = 2  # resampling makes at most twice the input slice count (as dcm2niix)


class AssemblyError(ValueError):
    """A stack that cannot be made into a trustworthy volume, with the reason."""


@dataclass
class StackGeometry:
    frames: list[FrameHeader]  # kept slices, sorted along the normal
    distances: np.ndarray  # position of each kept slice along the normal (mm)
    shifts: np.ndarray  # displacement of each slice along the column direction (rows)
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    column_spacing: float  # between columns (mm), along row_dir
    row_spacing: float  # between rows (mm), along col_dir
    slice_spacing: float  # of the output grid
    n_slices: int  # of the output grid
    n_rows: int  # of the output grid (more than the input's under gantry tilt)
    first_row: int  # output row 0 is input row `first_row` of slice 0
    tilt_deg: float
    resampled: bool  # output slices are interpolated, not copied
    notes: list[str] = field(default_factory=list)

    @property
    def n_columns(self) -> int:
        return self.frames[0].columns

    @property
    def size(self) -> tuple[int, int, int]:
        """(x, y, z) as SimpleITK counts: columns, rows, slices."""
        return (self.n_columns, self.n_rows, self.n_slices)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.column_spacing, self.row_spacing, self.slice_spacing)

    @property
    def origin(self) -> tuple[float, float, float]:
        first = np.asarray(self.frames[0].position, float)
        return tuple(float(v) for v in first + self.first_row * self.row_spacing * self.col_dir)

    @property
    def direction(self) -> tuple[float, ...]:
        """Row-major 3x3 with the axes' directions as columns (SimpleITK's layout)."""
        matrix = np.column_stack([self.row_dir, self.col_dir, self.normal])
        return tuple(float(v) for v in matrix.ravel())

    @property
    def output_distances(self) -> np.ndarray:
        return self.distances[0] + self.slice_spacing * np.arange(self.n_slices)

    @property
    def coverage_mm(self) -> float:
        return float(self.distances[-1] - self.distances[0])

    @property
    def spacing_range(self) -> tuple[float, float]:
        gaps = np.diff(self.distances)
        return (float(gaps.min()), float(gaps.max())) if gaps.size else (0.0, 0.0)


def plan_geometry(stack: Stack, missing_slices: str = "refuse") -> StackGeometry:
    """Sort, de-duplicate and check one stack; raise AssemblyError where it cannot be trusted.

    missing_slices: "refuse" (a hole in the stack is an error) or "resample" (the hole is
    filled by interpolating its neighbours onto a uniform grid, with a note)."""
    if missing_slices not in ("refuse", "resample"):
        raise ValueError(f"missing_slices must be 'refuse' or 'resample', not {missing_slices!r}")
    first = stack.first
    row_dir = _unit(first.orientation[:3])  # type: ignore[index]
    col_dir = _unit(first.orientation[3:])  # type: ignore[index]
    normal = slice_normal(first.orientation)  # type: ignore[arg-type]
    row_spacing, column_spacing = first.pixel_spacing  # type: ignore[misc]
    notes: list[str] = []

    frames = sorted(stack.frames, key=lambda f: float(np.dot(f.position, normal)))  # type: ignore[arg-type]
    frames = _drop_duplicates(frames, normal, notes)
    if len(frames) < 2:
        raise AssemblyError("fewer than two distinct slice positions")
    positions = np.array([f.position for f in frames], float)
    distances = positions @ normal
    drift = positions - positions[0] - np.outer(distances - distances[0], normal)
    shifts = drift @ col_dir / row_spacing
    sideways = np.abs(drift @ row_dir / column_spacing).max()
    if sideways > SHEAR_PIXELS:
        raise AssemblyError(
            f"slice positions drift {sideways:.2f} pixels along the row direction: "
            "not a gantry tilt the node can correct"
        )
    tilt_deg = 0.0
    if np.abs(shifts).max() > SHEAR_PIXELS:
        along = drift[-1] @ col_dir
        tilt_deg = math.degrees(math.atan2(along, distances[-1] - distances[0]))
        notes.append(
            f"gantry tilt {abs(tilt_deg):.1f} deg: slices de-sheared onto an orthogonal grid "
            f"in the acquired slice plane (as dcm2niix), {len(frames)} slices shifted by up to "
            f"{np.abs(shifts).max():.1f} rows"
        )
    else:
        shifts = np.zeros(len(frames))

    gaps = np.diff(distances)
    spacing, n_slices, resampled = _slice_grid(gaps, missing_slices, notes)
    first_row = math.floor(shifts.min() + 1e-6)
    n_rows = first.rows + math.ceil(shifts.max() - first_row - 1e-6)
    geometry = StackGeometry(
        frames=frames,
        distances=distances,
        shifts=shifts,
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        column_spacing=float(column_spacing),
        row_spacing=float(row_spacing),
        slice_spacing=spacing,
        n_slices=n_slices,
        n_rows=n_rows,
        first_row=first_row,
        tilt_deg=tilt_deg,
        resampled=resampled or tilt_deg != 0.0,
        notes=notes,
    )
    for note in notes:
        log.info("stack %s (series %s): %s", stack.label, stack.series_uid, note)
    return geometry


def _unit(values) -> np.ndarray:
    vector = np.asarray(values, float)
    return vector / np.linalg.norm(vector)


def _drop_duplicates(
    frames: list[FrameHeader], normal: np.ndarray, notes: list[str]
) -> list[FrameHeader]:
    """One image per position. The same SOP instance twice is a resend; two instances at one
    position keep the later one (latest content time, then highest instance number), the way
    a PACS replaces a corrected image."""
    kept: list[FrameHeader] = []
    for frame in frames:
        if kept and _same_position(kept[-1], frame, normal):
            previous = kept[-1]
            if previous.sop_uid == frame.sop_uid and previous.frame == frame.frame:
                notes.append(f"SOP instance {frame.sop_uid} received twice: one copy used")
                continue
            winner = max(previous, frame, key=_recency)
            loser = frame if winner is previous else previous
            notes.append(
                f"duplicate position {float(np.dot(frame.position, normal)):.2f} mm: kept "
                f"instance {winner.sop_uid} (#{winner.instance_number}), dropped "
                f"{loser.sop_uid} (#{loser.instance_number}): later content time / "
                "higher instance number wins"
            )
            kept[-1] = winner
            continue
        kept.append(frame)
    return kept


def _recency(frame: FrameHeader) -> tuple[str, int]:
    return (frame.content_time, frame.instance_number or 0)


def _same_position(a: FrameHeader, b: FrameHeader, normal: np.ndarray) -> bool:
    delta = np.asarray(a.position, float) - np.asarray(b.position, float)
    return abs(float(delta @ normal)) < DUPLICATE_MM and float(np.linalg.norm(delta)) < 1.0


def _slice_grid(gaps: np.ndarray, missing_slices: str, notes: list[str]) -> tuple[float, int, bool]:
    """Output spacing and slice count, and whether slices must be interpolated."""
    total = float(gaps.sum())
    median = float(np.median(gaps))
    if float(gaps.max() - gaps.min()) <= UNIFORM_MM:
        return total / len(gaps), len(gaps) + 1, False
    holes = _holes(gaps)
    if holes:
        where = ", ".join(f"{gaps[i]:.2f} mm after slice {i}" for i in holes[:3])
        message = f"missing slices: gap above {MISSING_FACTOR}x the neighbouring spacing ({where})"
        if missing_slices == "refuse":
            raise AssemblyError(message + "; refused (config [assembly] missing_slices)")
        notes.append(message + "; filled by interpolation onto a uniform grid")
    else:
        notes.append(
            f"variable slice spacing {gaps.min():.2f}-{gaps.max():.2f} mm (median {median:.2f}): "
            "resampled to a uniform grid"
        )
    # Finest spacing present, but never more than twice the input slices (as dcm2niix), so a
    # single close pair cannot blow the volume up.
    spacing = max(float(gaps.min()), total / (MAX_SLICE_FACTOR * (len(gaps) + 1) - 1))
    n_slices = int(math.floor(total / spacing + 1e-3)) + 1
    notes.append(f"uniform grid: {n_slices} slices every {spacing:.3f} mm")
    return spacing, n_slices, True


def _holes(gaps: np.ndarray) -> list[int]:
    """Gaps above MISSING_FACTOR x the spacing on both sides of them (median of up to two gaps
    each side): a hole stands out against its neighbourhood on both sides, while a protocol
    that changes spacing part-way (a GE head scan: 4 mm, then 7 mm) has the larger spacing
    after the change too."""
    holes = []
    for i, gap in enumerate(gaps):
        sides = [gaps[max(0, i - 2) : i], gaps[i + 1 : i + 3]]
        references = [float(np.median(side)) for side in sides if side.size]
        if references and all(gap > MISSING_FACTOR * ref for ref in references):
            holes.append(i)
    return holes
