"""Implanted devices (the broad variety, variety.py): coronary stents and pacemaker leads.

Both are metal, far brighter than calcium, and never counted: a reader leaves a stented
segment and a lead out of the Agatston score. They are painted on the canvas like anatomy
(partial volume, then the scanner's blur and noise), labelled `Label.DEVICE`.
"""

from __future__ import annotations

import numpy as np

from models.labels import Label
from models.phantoms.anatomy import Anatomy, Vessel
from models.phantoms.canvas import Canvas, paint_tube
from models.phantoms.variety import LEAD_RATE, STENT_RATE

STENT_HU = (900.0, 2000.0)  # a strut mesh averaged over a voxel, with blooming
LEAD_HU = (2000.0, 3000.0)  # a wire conductor
LEAD_RADIUS_MM = (0.8, 1.3)


def _segment(vessel: Vessel, start: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of a vessel's centreline from fraction `start` over `length` of its length."""
    n = len(vessel.path)
    lo = int(np.clip(round(start * (n - 1)), 0, n - 2))
    hi = int(np.clip(round((start + length) * (n - 1)), lo + 1, n - 1))
    return vessel.path[lo : hi + 1], vessel.radii[lo : hi + 1]


def paint_stent(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    tree = anatomy.coronaries
    vessel = (tree.lad, tree.lcx, tree.rca)[int(rng.integers(3))]
    path, radii = _segment(vessel, rng.uniform(0.0, 0.5), rng.uniform(0.12, 0.3))
    paint_tube(canvas, path, radii + 0.3, float(rng.uniform(*STENT_HU)), Label.DEVICE)


def lead_paths(anatomy: Anatomy, z_top: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Centrelines of one or two leads: from the left subclavian region at the top of the scan
    down the superior vena cava into the right atrium, then to the right ventricle's apex
    (ventricular lead) or the atrial appendage (atrial lead)."""
    p, med = anatomy.patient, anatomy.mediastinum
    cx, front = p.centre_xy[0], p.centre_xy[1] - p.half_depth + p.wall
    root = med.aortic_root
    entry = np.array([cx + 0.3 * p.half_width, front + 20.0, z_top + 10.0])
    svc_top = np.array([cx - 28.0, root[1] + 1.0, z_top])
    svc_bottom = np.array([cx - 25.0, root[1] + 5.0, root[2]])
    atria_centre, _, atria_radii = p.atria()
    right_atrium = atria_centre + np.array([-0.5 * atria_radii[0], 0.0, -0.3 * atria_radii[2]])
    right = -np.sign(p.left_angle()) or -1.0
    apex = p.surface_point(rng.uniform(0.55, 0.8), right * rng.uniform(0.1, 0.5), lift=-9.0)
    ventricular = np.stack([entry, svc_top, svc_bottom, right_atrium, apex])
    paths = [ventricular]
    if rng.random() < 0.5:
        appendage = atria_centre + np.array([-0.3 * atria_radii[0], -8.0, 0.6 * atria_radii[2]])
        paths.append(np.stack([entry + [5.0, 0.0, 0.0], svc_top, svc_bottom, appendage]))
    return paths


def paint_leads(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    z_top = float(canvas.z.max()) + 5.0
    for path in lead_paths(anatomy, z_top, rng):
        radius = float(rng.uniform(*LEAD_RADIUS_MM))
        value = float(rng.uniform(*LEAD_HU))
        paint_tube(canvas, path, np.full(len(path), radius), value, Label.DEVICE)


def paint_devices(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> list[str]:
    """Paint what this case has (a stent, leads, both or neither); returns their names."""
    painted = []
    if rng.random() < STENT_RATE:
        paint_stent(canvas, anatomy, rng)
        painted.append("stent")
    if rng.random() < LEAD_RATE:
        paint_leads(canvas, anatomy, rng)
        painted.append("pacemaker_lead")
    return painted
