"""Calcifications as solid shapes in millimetres, and their partial-volume rendering.

Shapes are unions of two primitives placed in a local frame of the vessel (tangent, outward
normal, binormal): ellipsoids and wall arcs (a sector of a cylindrical shell round the lumen).
Coronary kinds: spotty (one small ellipsoid on the wall), elongated (a chain of ellipsoids
along the vessel), ring-like (a wide wall arc), clustered (several small spots) and slivers
(a thin short arc, which partial volume leaves near or below 130 HU). Confounders that must
not count: aortic wall plaques, aortic valve and mitral annulus calcium.

Rendering: the fraction of each voxel the shape fills, from 4 x 4 samples per pixel on fine
planes 0.1-0.25 mm apart, weighted along z by the slice-sensitivity profile (a Gaussian whose
full width at half maximum is the nominal slice thickness). The voxel becomes
(1 - fraction) x tissue + fraction x calcium density, then takes the kernel's in-plane PSF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.phantoms_alt.grid import Grid
from training.phantoms_alt.heart import VESSEL_STEP_MM, Heart, Vessel

SUBSAMPLES = 4  # per pixel and axis, in-plane
CORONARY_KINDS = ("spotty", "elongated", "ring", "clustered", "sliver")
KIND_WEIGHTS = (0.3, 0.25, 0.15, 0.15, 0.15)
VESSEL_WEIGHTS = {"LM": 0.06, "LAD": 0.34, "D1": 0.06, "LCX": 0.16, "OM1": 0.06, "RCA": 0.26,
                  "PDA": 0.06}  # fmt: skip


@dataclass
class Ellipsoid:
    centre: np.ndarray  # mm
    frame: np.ndarray  # rows: unit axes
    radii: np.ndarray  # mm along the rows of frame

    def inside(self, p: np.ndarray) -> np.ndarray:
        local = (p - self.centre) @ self.frame.T / self.radii
        return np.einsum("...i,...i->...", local, local) <= 1.0

    def extent(self) -> float:
        return float(self.radii.max())


@dataclass
class WallArc:
    axis_point: np.ndarray  # on the vessel centre line
    frame: np.ndarray  # rows: tangent, normal (angle 0), binormal
    half_length: float
    r_inner: float
    r_outer: float
    centre_deg: float
    half_arc_deg: float

    def inside(self, p: np.ndarray) -> np.ndarray:
        local = (p - self.axis_point) @ self.frame.T
        radial = np.hypot(local[..., 1], local[..., 2])
        angle = np.degrees(np.arctan2(local[..., 2], local[..., 1]))
        off = np.abs((angle - self.centre_deg + 180) % 360 - 180)
        return (
            (np.abs(local[..., 0]) <= self.half_length)
            & (radial >= self.r_inner)
            & (radial <= self.r_outer)
            & (off <= self.half_arc_deg)
        )

    def extent(self) -> float:
        return float(max(self.half_length, self.r_outer))


@dataclass
class Calcification:
    kind: str
    label: int  # models.labels value
    density_hu: float  # of the calcified material, at 120 kVp
    parts: list = field(default_factory=list)
    vessel: str | None = None

    def inside(self, p: np.ndarray) -> np.ndarray:
        hit = np.zeros(p.shape[:-1], bool)
        for part in self.parts:
            hit |= part.inside(p)
        return hit

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        centres = np.stack(
            [getattr(q, "centre", getattr(q, "axis_point", None)) for q in self.parts]
        )
        reach = max(q.extent() for q in self.parts)
        return centres.min(axis=0) - reach, centres.max(axis=0) + reach

    def centre(self) -> list[float]:
        lo, hi = self.bounds()
        return [round(float(v), 1) for v in (lo + hi) / 2]


def fill_fraction(shape: Calcification, grid: Grid, thickness_mm: float):
    """(array box, fraction of each voxel of the box that the shape fills through the slice
    profile) or None when the shape misses the grid."""
    lo, hi = shape.bounds()
    sigma_z = thickness_mm / 2.355
    pad = np.array([grid.spacing[2], grid.spacing[1], 3 * sigma_z])
    box = grid.index_box(lo - pad, hi + pad)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    p = grid.spacing[1]
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES * p - p / 2
    fine_step = min(0.25, thickness_mm / 5)
    planes = np.arange(lo[2], hi[2] + fine_step, fine_step, dtype=np.float32)
    ys = (y.ravel()[:, None] + offsets[None, :]).ravel().astype(np.float32)  # (ny * S)
    xs = (x.ravel()[:, None] + offsets[None, :]).ravel().astype(np.float32)
    hit = np.zeros((len(planes), len(ys), len(xs)), bool)
    for part in shape.parts:  # each part only on the samples of its own bounding box
        centre = getattr(part, "centre", getattr(part, "axis_point", None))
        reach = part.extent()
        ranges = [np.searchsorted(axis, [c - reach, c + reach]) for axis, c in
                  ((xs, centre[0]), (ys, centre[1]), (planes, centre[2]))]  # fmt: skip
        (x0, x1), (y0, y1), (z0, z1) = ranges
        if x1 <= x0 or y1 <= y0 or z1 <= z0:
            continue
        points = np.empty((z1 - z0, y1 - y0, x1 - x0, 3), np.float32)
        points[..., 0] = xs[None, None, x0:x1]
        points[..., 1] = ys[None, y0:y1, None]
        points[..., 2] = planes[z0:z1, None, None]
        hit[z0:z1, y0:y1, x0:x1] |= part.inside(points)
    hit = hit.astype(np.float32)
    ny, nx = y.size, x.size
    per_plane = hit.reshape(len(planes), ny, SUBSAMPLES, nx, SUBSAMPLES).mean(axis=(2, 4))
    # Slice-sensitivity profile: weight of each fine plane for each slice centre (mm^-1 x step).
    dz = z.ravel()[:, None] - planes[None, :]
    weight = np.exp(-0.5 * (dz / sigma_z) ** 2) * fine_step / (sigma_z * np.sqrt(2 * np.pi))
    fraction = np.tensordot(weight.astype(np.float32), per_plane, axes=(1, 0))
    return box, np.clip(fraction, 0.0, 1.0)


# ------------------------------------------------------------------ sampling


def _vessel_frame(heart: Heart, vessel: Vessel, i: int) -> np.ndarray:
    tangent = vessel.tangent[i]
    normal = heart.outward(vessel.points[i : i + 1])[0]
    normal = normal - (normal @ tangent) * tangent
    normal /= np.linalg.norm(normal)
    return np.stack([tangent, normal, np.cross(tangent, normal)])


def _on_wall(frame, point, radius, angle_deg, depth=0.0):
    a = np.radians(angle_deg)
    return point + (radius + depth) * (np.cos(a) * frame[1] + np.sin(a) * frame[2])


def _rotated(frame, angle_deg):
    """The frame turned about its tangent so that its normal points at the wall angle."""
    a = np.radians(angle_deg)
    n = np.cos(a) * frame[1] + np.sin(a) * frame[2]
    return np.stack([frame[0], n, np.cross(frame[0], n)])


def sample_coronary(
    rng: np.random.Generator, heart: Heart, scale: float, kinds=CORONARY_KINDS, weights=KIND_WEIGHTS
) -> Calcification:
    """One coronary calcification; scale (about 0.5-1.8) sets its size."""
    vessels = [v for v in heart.vessels if v.length_mm > 6]
    p = np.array([VESSEL_WEIGHTS[v.name] for v in vessels])
    vessel = vessels[rng.choice(len(vessels), p=p / p.sum())]
    n = len(vessel.points)
    i = int(np.clip(rng.beta(1.2, 2.2) * 0.9 * n, 2, n - 3))
    w = np.asarray(weights, float)
    kind = str(rng.choice(kinds, p=w / w.sum()))
    frame = _vessel_frame(heart, vessel, i)
    point, radius = vessel.points[i], float(vessel.radius[i])
    angle = rng.uniform(0, 360)
    density = float(np.exp(rng.uniform(np.log(250), np.log(1500))))
    parts: list = []
    if kind == "spotty":
        radii = rng.uniform([0.5, 0.5, 0.4], [1.4, 1.2, 1.0]) * scale
        parts.append(
            Ellipsoid(_on_wall(frame, point, radius, angle), _rotated(frame, angle), radii)
        )
    elif kind == "elongated":
        length = rng.uniform(2.5, 8.0) * scale
        steps = max(int(length / VESSEL_STEP_MM / 2), 1)
        thick = rng.uniform(0.6, 1.3) * scale
        for j in range(max(i - steps, 0), min(i + steps, n - 1) + 1, 2):
            f = _vessel_frame(heart, vessel, j)
            taper = 1 - 0.6 * (abs(j - i) / (steps + 1)) ** 2
            radii = np.array([0.9, thick * taper, thick * 0.8 * taper])
            on_wall = _on_wall(f, vessel.points[j], float(vessel.radius[j]), angle)
            parts.append(Ellipsoid(on_wall, _rotated(f, angle), radii))
    elif kind == "ring":
        parts.append(WallArc(point, frame, rng.uniform(0.8, 2.5) * scale, radius - 0.2,
                             radius + rng.uniform(0.5, 1.1) * scale, angle,
                             rng.uniform(60, 170)))  # fmt: skip
    elif kind == "clustered":
        for _ in range(int(rng.integers(2, 6))):
            j = int(np.clip(i + rng.integers(-8, 9), 0, n - 1))
            f = _vessel_frame(heart, vessel, j)
            a = rng.uniform(0, 360)
            radii = rng.uniform(0.4, 0.9, 3) * scale
            on_wall = _on_wall(f, vessel.points[j], float(vessel.radius[j]), a)
            parts.append(Ellipsoid(on_wall, _rotated(f, a), radii))
    else:  # sliver: a thin short arc, often left under 130 HU by partial volume
        thickness = rng.uniform(0.25, 0.5)
        parts.append(WallArc(point, frame, rng.uniform(0.8, 2.5) * scale, radius,
                             radius + thickness, angle, rng.uniform(20, 60)))  # fmt: skip
        density = float(rng.uniform(700, 1600))
    return Calcification(kind, vessel.label, density, parts, vessel.name)


def sample_confounders(
    rng: np.random.Generator, heart: Heart, aorta: Vessel, labels
) -> list[Calcification]:
    """Aortic wall plaques, aortic valve and mitral annulus calcium (labels 50, 51, 52)."""
    out = []
    if rng.random() < 0.5:  # aortic wall: ascending aorta and arch, near the coronary ostia
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, max(len(aorta.points) // 2, 2)))
            frame = np.stack([aorta.tangent[i], *_perpendiculars(aorta.tangent[i])])
            a = rng.uniform(0, 360)
            centre = _on_wall(frame, aorta.points[i], float(aorta.radius[i]), a, -0.5)
            radii = np.array([rng.uniform(2, 7), rng.uniform(1, 2.5), rng.uniform(0.6, 1.4)])
            out.append(Calcification("aortic_wall", labels.AORTIC_WALL_CALCIFICATION,
                                     float(rng.uniform(300, 1200)),
                                     [Ellipsoid(centre, _rotated(frame, a), radii)]))  # fmt: skip
    if rng.random() < 0.25:  # aortic valve: clumps on the cusps inside the root
        frame = np.stack([aorta.tangent[0], *_perpendiculars(aorta.tangent[0])])
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            a = rng.uniform(0, 360)
            centre = _on_wall(frame, aorta.points[0], 0.55 * float(aorta.radius[0]), a)
            parts.append(Ellipsoid(centre, _rotated(frame, a), rng.uniform(1.0, 3.0, 3)))
        out.append(Calcification("aortic_valve", labels.AORTIC_VALVE_CALCIFICATION,
                                 float(rng.uniform(400, 1400)), parts))  # fmt: skip
    if rng.random() < 0.2:  # mitral annulus: an arc under the circumflex, deeper in the wall
        depth = heart.fat_mm + rng.uniform(5, 9)
        alpha = np.linspace(rng.uniform(60, 100), rng.uniform(140, 200), 30)
        ring = heart.surface(np.full(alpha.shape, heart.av_t + 0.05), alpha, depth)
        thick = rng.uniform(1.0, 2.2)
        parts = [Ellipsoid(p, np.eye(3), np.full(3, thick)) for p in ring[::2]]
        out.append(Calcification("mitral_annulus", labels.MITRAL_ANNULUS_CALCIFICATION,
                                 float(rng.uniform(300, 1000)), parts))  # fmt: skip
    return out


def _perpendiculars(t: np.ndarray):
    helper = np.array([1.0, 0, 0]) if abs(t[0]) < 0.9 else np.array([0, 1.0, 0])
    n = np.cross(t, helper)
    n /= np.linalg.norm(n)
    return n, np.cross(t, n)
