"""The heart: a tapered superellipsoid envelope with chamber ellipsoids inside and the coronary
arteries as smooth curves in the epicardial fat just under its surface.

The heart's own frame: u along the long axis from the base to the apex (anterior, left and
inferior in the patient), v towards the patient's left and w anterior, both orthogonal to u.
A point of the envelope is addressed by t (position along u, -1 at the base, +1 at the apex)
and alpha (angle about u: 0 anterior, +90 left, -90 right, 180 posterior). The coronaries are
given as courses in (t, alpha): the atrioventricular groove is a level of t (the RCA runs round
its right side, the circumflex round its left), the anterior interventricular groove a small
positive alpha (the LAD), and the posterior descending artery leaves the crux (alpha 180)
towards the apex from the RCA (right dominance), the circumflex (left) or the RCA with a short
circumflex (co-dominance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.labels import Label

VESSEL_STEP_MM = 0.4

# Chamber cavities in normalised local coordinates: centre (t, v/Rv, w/Rw), semi-axes.
CHAMBERS = {
    "LV": ((0.15, 0.25, -0.05), (0.5, 0.38, 0.42)),
    "RV": ((0.0, -0.38, 0.32), (0.5, 0.34, 0.28)),
    "LA": ((-0.62, 0.22, -0.45), (0.3, 0.38, 0.32)),
    "RA": ((-0.5, -0.52, -0.05), (0.32, 0.3, 0.35)),
}
RIGHT_CHAMBERS = ("RV", "RA")


@dataclass
class Vessel:
    name: str  # LM, LAD, D1, LCX, OM1, RCA, PDA
    label: int  # the coronary-calcium label a lesion on it gets
    points: np.ndarray  # (N, 3) mm, x y z, VESSEL_STEP_MM apart
    radius: np.ndarray  # (N,) lumen radius, mm

    @property
    def tangent(self) -> np.ndarray:
        d = np.gradient(self.points, axis=0)
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)

    @property
    def length_mm(self) -> float:
        return VESSEL_STEP_MM * (len(self.points) - 1)


@dataclass
class Heart:
    centre: np.ndarray  # mm (x, y, z)
    frame: np.ndarray  # rows u, v, w
    half_length: float  # along u, mm
    radii: tuple[float, float]  # along v and w at the widest, mm
    n_long: float
    n_cross: float
    taper: float  # the cross-section narrows by this fraction from the middle to the apex
    fat_mm: float  # epicardial fat depth
    av_t: float  # atrioventricular groove level
    dominance: str  # right, left, co
    aortic_root: np.ndarray  # centre of the aortic root, mm
    aortic_root_radius: float
    vessels: list[Vessel] = field(default_factory=list)

    # ------------------------------------------------------------------ geometry
    def local(self, x, y, z):
        """(t, v mm, w mm) of broadcastable patient coordinates (float32 like them)."""
        c = self.centre.astype(np.float32)
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        u, v, w = self.frame.astype(np.float32)
        return (
            (dx * u[0] + dy * u[1] + dz * u[2]) / np.float32(self.half_length),
            dx * v[0] + dy * v[1] + dz * v[2],
            dx * w[0] + dy * w[1] + dz * w[2],
        )

    def _girth(self, t):
        return 1.0 - self.taper * np.clip(t, 0.0, None)

    def envelope(self, t, v, w, shrink_mm: float = 0.0):
        """Superellipsoid function: <= 1 inside the envelope shrunk by shrink_mm."""
        g = self._girth(t)
        scale = self.half_length / (self.half_length - shrink_mm)
        rv, rw = (self.radii[0] - shrink_mm) * g, (self.radii[1] - shrink_mm) * g
        m, n = self.n_cross, self.n_long
        cross = (np.abs(v) / rv) ** m + (np.abs(w) / rw) ** m
        return np.abs(t * scale) ** n + cross ** (n / m)

    def radial_level(self, t, v, w):
        """About the distance in mm outside the envelope (negative inside): one evaluation
        of the superellipsoid serves the pericardial fat, the surface and the fat depth."""
        q = self.envelope(t, v, w).astype(np.float32) ** np.float32(1 / self.n_long)
        mean_radius = np.float32(0.5 * (self.radii[0] + self.radii[1])) * self._girth(t)
        return (q - 1) * mean_radius

    def surface(self, t, alpha_deg, depth_mm: float = 0.0) -> np.ndarray:
        """Points (N, 3) at depth_mm under the envelope at (t, alpha)."""
        t, a = np.asarray(t, float), np.radians(np.asarray(alpha_deg, float))
        g = self._girth(t)
        m, n = self.n_cross, self.n_long
        denom = (np.abs(np.sin(a)) / (self.radii[0] * g)) ** m + (
            np.abs(np.cos(a)) / (self.radii[1] * g)
        ) ** m
        rho = (1 - np.abs(t) ** n).clip(0) ** (1 / n) / denom ** (1 / m)
        rho = np.maximum(rho - depth_mm, 1.0)
        u, v, w = self.frame
        return (
            self.centre
            + (t * self.half_length)[:, None] * u
            + (rho * np.cos(a))[:, None] * w
            + (rho * np.sin(a))[:, None] * v
        )

    def chamber(self, name: str, t, v, w):
        """<= 1 inside a chamber cavity."""
        (ct, cv, cw), (st, sv, sw) = CHAMBERS[name]
        return (
            ((t - ct) / st) ** 2
            + ((v / self.radii[0] - cv) / sv) ** 2
            + ((w / self.radii[1] - cw) / sw) ** 2
        )

    def bounding_radius(self) -> float:
        return 1.15 * max(self.half_length, *self.radii)

    def outward(self, points: np.ndarray) -> np.ndarray:
        """Unit vectors from the long axis out to the points (for lesion frames)."""
        u = self.frame[0]
        rel = points - self.centre
        radial = rel - (rel @ u)[:, None] * u
        return radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)


def _unit(v):
    return v / np.linalg.norm(v)


def sample_heart(rng: np.random.Generator, centre: np.ndarray, size: float) -> Heart:
    """A heart at `centre` (mm) scaled by `size` (about 0.85-1.2), with random orientation,
    shape, fat and dominance, and its coronary tree."""
    azimuth = np.radians(rng.uniform(30, 60))  # from anterior towards the left
    elevation = np.radians(rng.uniform(18, 45))  # apex below the base
    u = np.array(
        [np.cos(elevation) * np.sin(azimuth), -np.cos(elevation) * np.cos(azimuth), -np.sin(elevation)]
    )  # fmt: skip
    v = _unit(np.array([1.0, 0, 0]) - u[0] * u)
    w = _unit(np.array([0, -1.0, 0]) - (-u[1]) * u - (-v[1]) * v)
    roll = np.radians(rng.uniform(-15, 15))
    v, w = np.cos(roll) * v + np.sin(roll) * w, -np.sin(roll) * v + np.cos(roll) * w
    half_length = rng.uniform(55, 70) * size
    heart = Heart(
        centre=np.asarray(centre, float),
        frame=np.stack([u, v, w]),
        half_length=half_length,
        radii=(rng.uniform(44, 56) * size, rng.uniform(38, 48) * size),
        n_long=rng.uniform(1.9, 2.5),
        n_cross=rng.uniform(2.0, 2.6),
        taper=rng.uniform(0.15, 0.35),
        fat_mm=rng.uniform(3.5, 8.0),
        av_t=rng.uniform(-0.32, -0.18),
        dominance=str(rng.choice(["right", "left", "co"], p=[0.7, 0.1, 0.2])),
        aortic_root=np.zeros(3),
        aortic_root_radius=rng.uniform(12, 16) * size,
    )
    # The aortic root sits at the base, right of the left atrium and behind the RV outflow.
    root_local = (-0.72 * half_length, -0.12 * heart.radii[0], 0.18 * heart.radii[1])
    heart.aortic_root = heart.centre + np.asarray(root_local) @ heart.frame
    heart.vessels = coronary_tree(heart, rng)
    return heart


def _course(heart: Heart, t_knots, alpha_knots, depth: float, rng, wiggle_deg: float):
    """Points along a course through (t, alpha) knots, with a smooth random wiggle in alpha."""
    s = np.linspace(0, 1, 400)
    knots = np.linspace(0, 1, len(t_knots))
    t = np.interp(s, knots, t_knots)
    alpha = np.interp(s, knots, alpha_knots)
    phase, cycles = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5)
    alpha = alpha + wiggle_deg * np.sin(2 * np.pi * cycles * s + phase) * np.sin(np.pi * s)
    return heart.surface(t, alpha, depth)


def _resample(points: np.ndarray) -> np.ndarray:
    """Points VESSEL_STEP_MM apart along the polyline."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, arc[-1], VESSEL_STEP_MM)
    return np.stack([np.interp(s, arc, points[:, i]) for i in range(3)], axis=1)


def _vessel(name, label, points, r0, r1) -> Vessel:
    points = _resample(points)
    return Vessel(name, int(label), points, np.linspace(r0, r1, len(points)))


def coronary_tree(heart: Heart, rng: np.random.Generator) -> list[Vessel]:
    av, depth = heart.av_t, heart.fat_mm * 0.55
    tree = []
    # Left main: from the left sinus of the aortic root to its bifurcation in the AV groove.
    bifurcation = heart.surface([av], [rng.uniform(35, 50)], depth)[0]
    root, r_root = heart.aortic_root, heart.aortic_root_radius
    ostium = root + r_root * _unit(bifurcation - root)
    lm = np.linspace(ostium, bifurcation, 40)
    tree.append(_vessel("LM", Label.CAC_LEFT_MAIN, lm, 2.2, 2.0))
    a0 = np.degrees(np.arctan2(*(bifurcation - heart.centre) @ heart.frame[[1, 2]].T))
    lad_end = rng.uniform(0.82, 0.95)
    lad = _course(heart, [av, av + 0.25, lad_end], [a0, rng.uniform(15, 30), rng.uniform(0, 12)],
                  depth, rng, rng.uniform(2, 6))  # fmt: skip
    tree.append(_vessel("LAD", Label.CAC_LAD, np.vstack([bifurcation, lad]), 1.8, 0.8))
    if rng.random() < 0.8:
        t0 = av + rng.uniform(0.2, 0.35)
        d1 = _course(heart, [t0, t0 + 0.4], [22, rng.uniform(50, 70)], depth, rng, 3)
        tree.append(_vessel("D1", Label.CAC_LAD, d1, 1.2, 0.7))
    lcx_end = {"right": rng.uniform(110, 140), "left": 180.0, "co": rng.uniform(155, 170)}
    lcx = _course(heart, [av, av + 0.03, av], [a0, 90, lcx_end[heart.dominance]], depth, rng, 0)
    tree.append(_vessel("LCX", Label.CAC_LCX, np.vstack([bifurcation, lcx]), 1.7, 1.0))
    if rng.random() < 0.8:
        a_om = rng.uniform(80, 105)
        om = _course(heart, [av + 0.02, av + rng.uniform(0.35, 0.55)], [a_om, a_om + 10],
                     depth, rng, 3)  # fmt: skip
        tree.append(_vessel("OM1", Label.CAC_LCX, om, 1.2, 0.7))
    # RCA: from the right sinus into the right AV groove, round to (or short of) the crux.
    rca_end = {"right": -180.0, "left": -rng.uniform(110, 130), "co": -180.0}
    rca_groove = _course(heart, [av, av + 0.05, av], [-30, -100, rca_end[heart.dominance]],
                         depth, rng, 0)  # fmt: skip
    ostium_r = root + r_root * _unit(rca_groove[0] - root)
    rca = np.vstack([np.linspace(ostium_r, rca_groove[0], 30), rca_groove])
    tree.append(_vessel("RCA", Label.CAC_RCA, rca, 2.0, 1.2))
    pda_length = {"right": rng.uniform(0.5, 0.8), "left": rng.uniform(0.5, 0.8), "co": 0.4}
    pda = _course(heart, [av, av + pda_length[heart.dominance]], [180, rng.uniform(170, 180)],
                  depth, rng, 3)  # fmt: skip
    pda_label = Label.CAC_LCX if heart.dominance == "left" else Label.CAC_RCA
    tree.append(_vessel("PDA", pda_label, pda, 1.3, 0.8))
    return tree
