"""Calcifications: coronary lesions that count and confounders that must not (aortic wall,
aortic valve and mitral annulus calcification; from generator version 2 also calcified lymph
nodes, lung granulomas and tracheal cartilage).

Each calcification is a small cluster of ellipsoids with one true density. It is rendered by
explicit supersampling (3 x 3 in plane, the slice thickness sampled every 0.35 mm along z, a box
slice profile), so partial volume comes from geometry rather than from a formula. The result is
blurred by the same in-plane kernel as the anatomy and added to the image.

Labels are assigned the way a reader annotates: the voxels of the final image that are at least
130 HU and that this calcification visibly contributes to (its blurred coverage >= 2 %) carry
its label. Ground truth is then the reference calculator applied to that final image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.agatston import CALCIUM_THRESHOLD_HU
from models.labels import Label
from models.phantoms import materials as mat
from models.phantoms.acquisition import Acquisition, blur_margin_px, in_plane_blur
from models.phantoms.anatomy import LUNG_LABELS, Anatomy, Vessel
from models.phantoms.canvas import Canvas, ellipsoid, ellipsoid_bounds
from models.phantoms.geometry import index_range
from models.phantoms.variety import (
    LESION_DENSITY_HU,
    LESION_SHAPES,
    OSTIAL_RATE,
    weighted_choice,
)

INFLUENCE_FRACTION = 0.02
SUBSAMPLES_XY = 3
SUBSAMPLE_Z_MM = 0.35


@dataclass(frozen=True)
class Blob:
    centre: np.ndarray
    axes: np.ndarray  # 3 orthonormal rows
    radii: np.ndarray


@dataclass(frozen=True)
class Calcification:
    label: int
    density_hu: float  # true density at this kVp, before partial volume and blur
    blobs: tuple[Blob, ...]

    def to_dict(self) -> dict:
        return {
            "label": Label(self.label).name.lower(),
            "density_hu": round(self.density_hu, 1),
            "centre_mm": [
                round(float(c), 2) for c in np.mean([b.centre for b in self.blobs], axis=0)
            ],
            "radius_mm": round(float(max(b.radii.max() for b in self.blobs)), 2),
            "blobs": len(self.blobs),
        }


@dataclass
class Rendered:
    """A calcification rendered into a local box of the image grid."""

    calcification: Calcification
    box: tuple[slice, slice, slice]
    delta_hu: np.ndarray  # blurred change of the image inside the box
    influence: np.ndarray  # bool: voxels this calcification visibly contributes to


def _frame(tangent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = tangent / np.linalg.norm(tangent)
    helper = rng.normal(size=3)
    u = helper - (helper @ t) * t
    u /= np.linalg.norm(u)
    return np.stack([t, u, np.cross(t, u)])


def _point_on(vessel: Vessel, position: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Point, tangent and radius at a fraction of a vessel's length."""
    path = vessel.path
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = position * cum[-1]
    i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
    f = (s - cum[i]) / max(seg[i], 1e-6)
    point = path[i] + f * (path[i + 1] - path[i])
    radius = vessel.radii[i] + f * (vessel.radii[i + 1] - vessel.radii[i])
    return point, path[i + 1] - path[i], float(radius)


def _wall_plaque(
    vessel: Vessel,
    position: float,
    size: float,
    density: float,
    label: int,
    rng: np.random.Generator,
    n_blobs: int,
    flat: float = 1.0,
) -> Calcification:
    """A plaque on a vessel wall: eccentric, elongated along the vessel, `size` mm in radius
    overall; several blobs make irregular shapes without making the plaque bigger."""
    point, tangent, radius = _point_on(vessel, position)
    frame = _frame(tangent, rng)
    centre = point + frame[1] * radius * rng.uniform(0.4, 1.0)
    blob_size = size / np.sqrt(n_blobs)
    blobs = []
    for i in range(n_blobs):
        offset = (i - (n_blobs - 1) / 2) * blob_size * rng.uniform(0.8, 1.4)
        radii = blob_size * np.array(
            [rng.uniform(1.0, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0) * flat]
        )
        c = centre + frame[0] * offset + frame[2] * rng.normal(0, 0.2 * blob_size)
        blobs.append(Blob(c, frame, np.maximum(radii, 0.4)))
    return Calcification(label, density, tuple(blobs))


# Lesion burden per target category: (number of lesions, lesion radius range in mm).
BURDEN = {
    0: ((0, 0), (0.0, 0.0)),
    1: ((1, 2), (0.5, 1.2)),
    2: ((1, 5), (0.8, 2.5)),
    3: ((2, 9), (1.5, 3.8)),
    4: ((4, 15), (1.8, 5.0)),
}
ARTERY_WEIGHTS = (
    (Label.CAC_LEFT_MAIN, 0.1),
    (Label.CAC_LAD, 0.42),
    (Label.CAC_LCX, 0.2),
    (Label.CAC_RCA, 0.28),
)


def sample_lesions(
    anatomy: Anatomy,
    acq: Acquisition,
    category: int,
    scale: float,
    rng: np.random.Generator,
    variety_rng: np.random.Generator | None = None,
) -> list[Calcification]:
    """Coronary lesions aimed at a risk category; `scale` enlarges or shrinks the burden.
    With `variety_rng` (the broad variety) each lesion also takes one of several shapes and
    a density from a wider range (variety.py)."""
    (n_lo, n_hi), (r_lo, r_hi) = BURDEN[category]
    if n_hi == 0:
        return []
    vessels = anatomy.coronaries.by_label()
    labels = [label for label, _ in ARTERY_WEIGHTS]
    weights = np.array([w for _, w in ARTERY_WEIGHTS])
    n = int(np.clip(round(rng.integers(n_lo, n_hi + 1) * np.sqrt(scale)), 1, 15))
    lesions = []
    for _ in range(n):
        label = labels[rng.choice(len(labels), p=weights / weights.sum())]
        position = rng.beta(1.3, 2.5)  # proximal segments calcify more often
        size = float(np.clip(rng.uniform(r_lo, r_hi) * scale ** (1 / 3), 0.5, 6.0))
        density = rng.uniform(250, 1800) * mat.calcium_factor(acq.kvp)
        # Drawn in both varieties (the broad one then redraws density and shape from its own
        # stream): the version-3 training phantoms were made this way.
        n_blobs = int(rng.integers(1, 4))
        if variety_rng is None:
            lesions.append(
                _wall_plaque(vessels[label], position, size, density, int(label), rng, n_blobs)
            )
            continue
        lo, hi = np.log(LESION_DENSITY_HU)
        density = float(np.exp(variety_rng.uniform(lo, hi))) * mat.calcium_factor(acq.kvp)
        lesions.append(
            shaped_lesion(vessels[label], position, size, density, int(label), variety_rng)
        )
    return lesions


def shaped_lesion(
    vessel: Vessel,
    position: float,
    size: float,
    density: float,
    label: int,
    rng: np.random.Generator,
) -> Calcification:
    """A lesion of one of the shapes of variety.LESION_SHAPES, about `size` mm in radius."""
    shape = weighted_choice(rng, LESION_SHAPES)
    point, tangent, radius = _point_on(vessel, position)
    frame = _frame(tangent, rng)
    wall = radius * rng.uniform(0.6, 1.0)  # eccentric: on the wall, towards one side
    if shape == "plaque":
        return _wall_plaque(vessel, position, size, density, label, rng, int(rng.integers(1, 4)))
    if shape == "spotty":
        r = max(0.4, 0.6 * size)
        blobs = [Blob(point + frame[1] * wall, frame, np.full(3, r))]
    elif shape == "elongated":  # a streak along the vessel
        r = max(0.4, 0.5 * size)
        blobs = [Blob(point + frame[1] * wall, frame, np.array([r * rng.uniform(2.5, 5.0), r, r]))]
    elif shape == "ring":  # blobs around the wall's circumference
        count = int(rng.integers(4, 9))
        r = max(0.4, size / np.sqrt(count))
        start, arc = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi, 2 * np.pi)
        blobs = [
            Blob(
                point + radius * (np.cos(a) * frame[1] + np.sin(a) * frame[2]),
                frame,
                np.array([1.5 * r, r, r]),
            )
            for a in start + np.linspace(0, arc, count)
        ]
    elif shape == "cluster":  # several small nodules over a short stretch
        count = int(rng.integers(3, 7))
        r = max(0.4, size / np.sqrt(count))
        blobs = [
            Blob(
                point
                + frame[0] * rng.uniform(-2.5, 2.5) * size
                + frame[1] * wall * rng.uniform(0.5, 1.2)
                + frame[2] * rng.normal(0, radius * 0.5),
                frame,
                r * rng.uniform(0.6, 1.2, 3),
            )
            for _ in range(count)
        ]
    else:  # sliver: thin and flat along the wall, mostly partial volume
        blobs = [
            Blob(
                point + frame[1] * radius,
                frame,
                np.array([max(0.8, 1.5 * size), max(0.5, size), 0.3]),
            )
        ]
    return Calcification(label, density, tuple(blobs))


def ostial_calcium(
    anatomy: Anatomy, acq: Acquisition, rng: np.random.Generator
) -> list[Calcification]:
    """Aortic-wall calcium at the left main or RCA ostium (the broad variety): where the
    aorta touches the arteries' first millimetres; a reader does not count it."""
    if rng.random() >= OSTIAL_RATE:
        return []
    tree = anatomy.coronaries
    root = anatomy.mediastinum.aortic_root
    out = []
    for vessel in (tree.left_main, tree.rca)[: int(rng.integers(1, 3))]:
        ostium = vessel.path[0]
        outward = (ostium - root) / max(np.linalg.norm(ostium - root), 1e-6)
        frame = _frame(outward, rng)
        blobs = tuple(
            Blob(
                ostium - outward * rng.uniform(1.0, 3.0) + frame[1:].T @ rng.uniform(-3, 3, 2),
                frame,
                rng.uniform(0.8, 2.5, 3),
            )
            for _ in range(rng.integers(1, 4))
        )
        out.append(
            Calcification(
                int(Label.AORTIC_WALL_CALCIFICATION),
                rng.uniform(300, 1500) * mat.calcium_factor(acq.kvp),
                blobs,
            )
        )
    return out


def sample_confounders(
    anatomy: Anatomy, acq: Acquisition, category: int, rng: np.random.Generator
) -> list[Calcification]:
    """Calcium that a naive threshold would count: aortic wall, aortic valve, mitral annulus.

    Older, more calcified patients have more of it, so the rate grows with the category.
    """
    factor = mat.calcium_factor(acq.kvp)
    out = []
    aorta = anatomy.mediastinum.aorta
    for _ in range(rng.poisson(0.8 + 1.2 * category)):
        out.append(
            _wall_plaque(
                aorta,
                rng.uniform(0.1, 1.0),
                rng.uniform(1.5, 5.0),
                rng.uniform(300, 1500) * factor,
                int(Label.AORTIC_WALL_CALCIFICATION),
                rng,
                int(rng.integers(1, 4)),
                flat=0.4,
            )
        )
    if rng.random() < 0.1 + 0.08 * category:  # aortic valve leaflets at the root
        root, r = anatomy.mediastinum.aortic_root, anatomy.mediastinum.aortic_root_radius
        blobs = tuple(
            Blob(
                root + rng.uniform(-0.6, 0.6, 3) * r,
                _frame(rng.normal(size=3), rng),
                rng.uniform(1.0, 3.5, 3),
            )
            for _ in range(rng.integers(1, 5))
        )
        out.append(
            Calcification(
                int(Label.AORTIC_VALVE_CALCIFICATION), rng.uniform(400, 1500) * factor, blobs
            )
        )
    if rng.random() < 0.08 + 0.06 * category:  # mitral annulus: an arc under the LCX
        p = anatomy.patient
        psi0 = p.left_angle()
        psis = (
            psi0
            + np.radians(rng.uniform(-60, 40))
            + np.radians(np.linspace(0, rng.uniform(20, 70), 5))
        )
        blobs = []
        for psi in psis:
            centre = p.surface_point(p.av_groove + 0.05, psi, lift=-rng.uniform(4, 7))
            blobs.append(Blob(centre, _frame(rng.normal(size=3), rng), rng.uniform(1.2, 3.0, 3)))
        out.append(
            Calcification(
                int(Label.MITRAL_ANNULUS_CALCIFICATION),
                rng.uniform(400, 1400) * factor,
                tuple(blobs),
            )
        )
    return out


# Incidental calcifications (generator version 2): common on the chest CT of older patients,
# never coronary, and small and dense like coronary lesions, so a scorer must tell them apart by
# where they lie. Their rates do not follow the coronary burden: a patient without coronary
# calcium has them as often as one with much.
NODES_PER_CASE = 1.0  # Poisson mean: calcified mediastinal and hilar lymph nodes
GRANULOMAS_PER_CASE = 0.7  # Poisson mean: calcified granulomas in the lungs near the heart
CARTILAGE_RATE = 0.25  # chance of calcified tracheal cartilage rings


def _trachea_axis_at(anatomy: Anatomy, z: float) -> np.ndarray:
    """The trachea's axis (x, y, z mm) at height z: its path runs straight from the top of the
    scan down to the carina."""
    path = anatomy.mediastinum.trachea.path
    top, carina = path[0], path[-1]
    return carina + (top - carina) * (z - carina[2]) / (top[2] - carina[2])


def _node_centre(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A lymph-node position at one of the stations a calcified node is usually found at:
    right or left paratracheal, subcarinal, aortopulmonary window, right or left hilum."""
    med = anatomy.mediastinum
    carina = med.trachea.path[-1]
    wall = float(med.trachea.radii[-1]) + 2.0
    station = rng.integers(6)
    if station < 2:  # paratracheal, right (-x) or left (+x), between the carina and the arch
        axis = _trachea_axis_at(anatomy, carina[2] + rng.uniform(5, 35))
        side = -1 if station == 0 else 1
        return axis + [side * (wall + rng.uniform(3, 10)), rng.uniform(-6, 6), 0.0]
    if station == 2:  # subcarinal: below the carina, between the main bronchi
        return carina + [rng.uniform(-4, 8), rng.uniform(0, 12), -rng.uniform(10, 25)]
    if station == 3:  # aortopulmonary window: above the pulmonary bifurcation, left of midline
        return med.pulmonary_bifurcation + [
            rng.uniform(0, 12),
            rng.uniform(-8, 4),
            rng.uniform(8, 20),
        ]
    return med.hila[station - 4] + rng.uniform(-10, 10, 3)


def _calcified_node(
    canvas: Canvas, anatomy: Anatomy, factor: float, rng: np.random.Generator
) -> Calcification:
    """A calcified lymph node: a soft-tissue node of 4-8 mm radius painted into the anatomy
    (where it lies in lung, the phantom's thin mediastinum) holding either one solid focus or
    a few stippled ones."""
    centre = _node_centre(anatomy, rng)
    axes, body = _frame(rng.normal(size=3), rng), rng.uniform(4.0, 8.0, 3)
    canvas.paint(
        ellipsoid(centre, axes, body),
        *ellipsoid_bounds(centre, axes, body),
        anatomy.patient.tissue["soft"],
        None,
        only_labels=LUNG_LABELS,
    )
    if rng.random() < 0.5:
        blobs = (Blob(centre, axes, np.minimum(rng.uniform(1.0, 4.5, 3), body)),)
    else:
        spread = 0.6 * float(body.min())
        blobs = tuple(
            Blob(
                centre + rng.uniform(-spread, spread, 3),
                _frame(rng.normal(size=3), rng),
                rng.uniform(0.6, 1.8, 3),
            )
            for _ in range(rng.integers(2, 6))
        )
    return Calcification(
        int(Label.LYMPH_NODE_CALCIFICATION), rng.uniform(300, 1500) * factor, blobs
    )


def _lung_points(canvas: Canvas, anatomy: Anatomy, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random positions (x, y, z mm) inside the lungs within 60 mm of the heart's centre
    height, where a granuloma lands in the score network's box."""
    z_centre = anatomy.patient.heart_centre[2]
    rows = index_range(canvas.z, z_centre - 60, z_centre + 60)
    lung = np.isin(canvas.labels[rows], LUNG_LABELS)
    where = np.flatnonzero(lung)
    if where.size == 0:
        return np.zeros((0, 3))
    k, j, i = np.unravel_index(rng.choice(where, size=n), lung.shape)
    return np.stack([canvas.x[i], canvas.y[j], canvas.z[rows][k]], 1)


def _cartilage_rings(anatomy: Anatomy, factor: float, rng: np.random.Generator) -> Calcification:
    """Calcified tracheal cartilage: thin arcs on the front and sides of the trachea's wall
    (the cartilage is a horseshoe open at the back), a ring every 4 mm above the carina."""
    trachea = anatomy.mediastinum.trachea
    carina = trachea.path[-1]
    radius = float(trachea.radii[-1]) + 1.0
    start = rng.uniform(5, 30)
    blobs = []
    for ring in range(rng.integers(2, 7)):
        axis = _trachea_axis_at(anatomy, carina[2] + start + 4.0 * ring)
        for angle in np.radians(rng.uniform(-110, 110, rng.integers(3, 7))):
            # angle 0 points to the front (-y); the arc runs round to both sides
            point = axis + radius * np.array([np.sin(angle), -np.cos(angle), 0.0])
            blobs.append(
                Blob(
                    point,
                    np.eye(3),
                    np.array([rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.6), rng.uniform(0.5, 1.0)]),
                )
            )
    return Calcification(
        int(Label.AIRWAY_CARTILAGE_CALCIFICATION), rng.uniform(250, 700) * factor, tuple(blobs)
    )


def sample_incidental(
    anatomy: Anatomy, canvas: Canvas, acq: Acquisition, rng: np.random.Generator
) -> list[Calcification]:
    """Calcified lymph nodes, lung granulomas and tracheal cartilage (see NODES_PER_CASE).
    Paints the nodes' soft tissue into the canvas, so it must run before the scan."""
    factor = mat.calcium_factor(acq.kvp)
    n_nodes = rng.poisson(NODES_PER_CASE)
    out = [_calcified_node(canvas, anatomy, factor, rng) for _ in range(n_nodes)]
    for centre in _lung_points(canvas, anatomy, rng.poisson(GRANULOMAS_PER_CASE), rng):
        blob = Blob(centre, _frame(rng.normal(size=3), rng), rng.uniform(1.0, 3.5, 3))
        out.append(
            Calcification(
                int(Label.LUNG_GRANULOMA_CALCIFICATION), rng.uniform(400, 1500) * factor, (blob,)
            )
        )
    if rng.random() < CARTILAGE_RATE:
        out.append(_cartilage_rings(anatomy, factor, rng))
    return out


def _inside(blob: Blob, x, y, z) -> np.ndarray:
    dx, dy, dz = x - blob.centre[0], y - blob.centre[1], z - blob.centre[2]
    q = 0.0
    for axis, radius in zip(blob.axes, blob.radii, strict=True):
        q = q + ((axis[0] * dx + axis[1] * dy + axis[2] * dz) / radius) ** 2
    return q <= 1.0


def render(
    calc: Calcification, canvas: Canvas, anatomy_hu: np.ndarray, acq: Acquisition
) -> Rendered | None:
    """Supersampled coverage of one calcification, blurred, as a change of the image."""
    low = np.min([b.centre - b.radii.max() for b in calc.blobs], axis=0)
    high = np.max([b.centre + b.radii.max() for b in calc.blobs], axis=0)
    margin = blur_margin_px(acq) * acq.pixel_spacing_mm
    half_t = acq.slice_thickness_mm / 2
    box = canvas.box(low - [margin, margin, half_t], high + [margin, margin, half_t])
    if box is None:
        return None
    px, n_xy = acq.pixel_spacing_mm, SUBSAMPLES_XY
    n_z = int(np.clip(np.ceil(acq.slice_thickness_mm / SUBSAMPLE_Z_MM), 1, 15))
    sub_xy = ((np.arange(n_xy) + 0.5) / n_xy - 0.5) * px
    sub_z = ((np.arange(n_z) + 0.5) / n_z - 0.5) * acq.slice_thickness_mm
    # Axes: (slice, z-sub, row, y-sub, column, x-sub).
    x = (canvas.x[box[2]][:, None] + sub_xy[None, :] * canvas.grid.row_sign)[None, None, None, None]
    y = (canvas.y[box[1]][:, None] + sub_xy[None, :])[None, None, :, :, None, None]
    z = (canvas.z[box[0]][:, None] + sub_z[None, :])[:, :, None, None, None, None]
    inside = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for blob in calc.blobs:
        inside |= _inside(blob, x, y, z)
    coverage = inside.mean(axis=(1, 3, 5), dtype=np.float32)
    if not coverage.any():
        return None
    delta = coverage * (np.float32(calc.density_hu) - anatomy_hu[box])
    blurred = in_plane_blur(np.stack([delta, coverage]), acq)
    return Rendered(calc, box, blurred[0], blurred[1] >= INFLUENCE_FRACTION)


def compose(
    base: np.ndarray, labels: np.ndarray, rendered: list[Rendered]
) -> tuple[np.ndarray, np.ndarray]:
    """Final int16 image and label map: base plus calcifications, annotated as a reader would."""
    image = np.clip(np.rint(base), -1024, 3071).astype(np.int16)
    labels = labels.copy()
    if not rendered:
        return image, labels
    total = {}
    for r in rendered:
        key = tuple((s.start, s.stop) for s in r.box)
        total[key] = total.get(key, 0) + r.delta_hu
    union = tuple(
        slice(min(r.box[a].start for r in rendered), max(r.box[a].stop for r in rendered))
        for a in range(3)
    )
    accumulated = base[union].copy()
    for key, delta in total.items():
        local = tuple(
            slice(start - u.start, stop - u.start)
            for (start, stop), u in zip(key, union, strict=True)
        )
        accumulated[local] += delta
    image[union] = np.clip(np.rint(accumulated), -1024, 3071).astype(np.int16)
    for r in rendered:  # confounders first, lesions last: lesions win where they overlap
        bright = image[r.box] >= CALCIUM_THRESHOLD_HU
        labels[r.box][r.influence & bright] = r.calcification.label
    return image, labels


def is_lesion(calc: Calcification) -> bool:
    return calc.label in (Label.CAC_LEFT_MAIN, Label.CAC_LAD, Label.CAC_LCX, Label.CAC_RCA)
