"""The trunk around the heart: an elliptic cylinder with fat and muscle layers, lungs with a
gravity-dependent density gradient, the diaphragm with the liver below it, mediastinal fat,
the aorta (root, ascending, arch, descending), trachea and main bronchi, the spine with discs
and canal, ribs, the sternum and the patient table. Painted on the canonical grid at voxel
centres, from the outside in; later structures overwrite earlier ones.

`iodine` holds, per voxel, the fraction of the blood-pool enhancement a contrast injection
would add there (1 in blood, less in myocardium and liver): the contrast variant of a case is
the same case plus iodine x (enhanced - unenhanced blood HU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from models.labels import Label
from training.phantoms_alt.acquisition import CALCIUM_FACTOR, FAT_SHIFT_HU
from training.phantoms_alt.grid import Grid
from training.phantoms_alt.heart import CHAMBERS, RIGHT_CHAMBERS, Heart, Vessel, sample_heart

BLOOD_HU = 40.0
MYOCARDIUM_HU = 48.0
FAT_HU = -95.0
AIR_HU = -1000.0


@dataclass
class Patient:
    centre: tuple[float, float]  # body axis (x, y), mm
    half_width: float
    half_depth: float
    fat_mm: float
    muscle_mm: float
    heart: Heart
    aorta: Vessel
    spine: tuple[float, float]  # vertebral body centre (x, y)
    vertebra_radius: float
    trachea: tuple[float, float]
    trachea_radius: float
    carina_z: float
    lung_top_z: float
    dome_z: float  # top of the right hemidiaphragm
    heart_top_z: float
    apex_z: float  # lowest point of the heart
    rib_pitch: float
    lung_hu: float
    prone: bool

    def to_dict(self) -> dict:
        h = self.heart
        return {
            "half_width_mm": round(self.half_width, 1),
            "half_depth_mm": round(self.half_depth, 1),
            "subcutaneous_fat_mm": round(self.fat_mm, 1),
            "heart_centre_mm": [round(float(v), 1) for v in h.centre],
            "heart_long_axis": [round(float(v), 3) for v in h.frame[0]],
            "heart_half_length_mm": round(h.half_length, 1),
            "dominance": h.dominance,
            "carina_z_mm": round(self.carina_z, 1),
            "heart_top_z_mm": round(self.heart_top_z, 1),
            "apex_z_mm": round(self.apex_z, 1),
            "prone": self.prone,
        }


def sample_patient(rng: np.random.Generator, prone: bool) -> Patient:
    half_width = rng.uniform(135, 200)
    half_depth = half_width * rng.uniform(0.62, 0.8)
    habitus = (half_width - 135) / 65
    fat = rng.uniform(4, 12) + rng.uniform(0, 30) * habitus
    muscle = rng.uniform(6, 15)
    cx, cy = rng.uniform(-10, 10), rng.uniform(-15, 15)
    inner_depth = half_depth - fat - muscle
    vertebra_radius = rng.uniform(16, 21)
    spine = (cx + rng.uniform(-4, 4), cy + inner_depth - vertebra_radius - rng.uniform(8, 16))
    heart_centre = np.array(
        [cx + rng.uniform(8, 30), cy - inner_depth * rng.uniform(0.05, 0.3), rng.uniform(-190, -110)]
    )  # fmt: skip
    heart = sample_heart(rng, heart_centre, size=rng.uniform(0.85, 1.0) + 0.2 * habitus)
    zs = _heart_z_range(heart)
    carina = zs[1] + rng.uniform(8, 28)
    trachea = (cx + rng.uniform(-4, 4), spine[1] - vertebra_radius - rng.uniform(14, 22))
    aorta = _aorta(rng, heart, trachea, spine, vertebra_radius, carina, zs[0] - 150)
    return Patient(
        centre=(cx, cy),
        half_width=half_width,
        half_depth=half_depth,
        fat_mm=fat,
        muscle_mm=muscle,
        heart=heart,
        aorta=aorta,
        spine=spine,
        vertebra_radius=vertebra_radius,
        trachea=trachea,
        trachea_radius=rng.uniform(8, 11),
        carina_z=carina,
        lung_top_z=carina + rng.uniform(45, 75),
        dome_z=zs[0] + rng.uniform(0, 25),
        heart_top_z=zs[1],
        apex_z=zs[0],
        rib_pitch=rng.uniform(22, 28),
        lung_hu=rng.uniform(-880, -820),
        prone=prone,
    )


def _heart_z_range(heart: Heart) -> tuple[float, float]:
    t = np.repeat(np.linspace(-0.999, 0.999, 60), 36)
    alpha = np.tile(np.linspace(-180, 180, 36), 60)
    z = heart.surface(t, alpha)[:, 2]
    return float(z.min()), float(z.max())


def _aorta(rng, heart: Heart, trachea, spine, vertebra_radius, carina, bottom_z) -> Vessel:
    root = heart.aortic_root
    arch_z = carina + rng.uniform(15, 35)
    descending = np.array([spine[0] + vertebra_radius + rng.uniform(2, 10),
                           spine[1] - vertebra_radius * rng.uniform(0.3, 0.9)])  # fmt: skip
    knots = np.array([
        root,
        [root[0] - rng.uniform(3, 10), root[1] - rng.uniform(0, 8), (root[2] + arch_z) / 2],
        [root[0] - rng.uniform(2, 8), root[1] - rng.uniform(0, 6), arch_z - 12],
        [trachea[0] + rng.uniform(8, 16), trachea[1] - 6, arch_z],
        [descending[0], descending[1], arch_z - 16],
        [descending[0] + rng.uniform(-3, 3), descending[1] - rng.uniform(0, 6), (arch_z + bottom_z) / 2],
        [descending[0], descending[1] - rng.uniform(0, 10), bottom_z],
    ])  # fmt: skip
    chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(knots, axis=0), axis=1))])
    s = np.arange(0, chord[-1], 1.0)
    points = CubicSpline(chord, knots, bc_type="natural")(s)
    r_root = heart.aortic_root_radius
    radius = np.interp(s, [0, chord[3], chord[4], chord[-1]],
                       [r_root, r_root * 0.95, r_root * 0.8, r_root * 0.7])  # fmt: skip
    return Vessel("aorta", int(Label.AORTA), points, radius)


# ------------------------------------------------------------------ painting


class Canvas:
    """HU, labels and iodine fraction on a grid, with painting helpers on bounding boxes."""

    def __init__(self, grid: Grid, kvp: int):
        self.grid = grid
        self.hu = np.full(grid.shape, AIR_HU, np.float32)
        self.labels = np.zeros(grid.shape, np.uint8)
        self.iodine = np.zeros(grid.shape, np.float32)
        self.calcium = CALCIUM_FACTOR[kvp]
        self.fat = FAT_HU + FAT_SHIFT_HU[kvp]

    def paint(self, box, mask, hu, label=None, iodine=None):
        if box is None or not mask.any():
            return
        view = self.hu[box]
        np.copyto(view, np.broadcast_to(np.asarray(hu, np.float32), view.shape), where=mask)
        if label is not None:
            np.copyto(self.labels[box], np.uint8(label), where=mask)
        if iodine is not None:
            np.copyto(self.iodine[box], np.float32(iodine), where=mask)

    def tube(self, points, radius, hu, label, iodine=None, step: int = 1):
        """A tube as the union of balls along a centre line (points closer than a radius)."""
        g = self.grid
        for p, r in zip(points[::step], radius[::step], strict=True):
            box = g.index_box(p - r, p + r)
            if box is None:
                continue
            z, y, x = g.coords(box)
            mask = (x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2 <= r * r
            self.paint(box, mask, hu, label, iodine)


def paint_anatomy(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> None:
    g, pt = canvas.grid, patient
    cx, cy = pt.centre
    whole = (slice(0, g.shape[0]), slice(0, g.shape[1]), slice(0, g.shape[2]))
    z, y, x = g.coords(whole)

    def ellipse(a, b):
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2  # (1, ny, nx)

    a, b = pt.half_width, pt.half_depth
    # Table: under the back (supine) or the chest (prone), in patient coordinates.
    table_y = cy - b - 8 if pt.prone else cy + b + 3
    table = (np.abs(x - cx) < 230) & (y >= table_y) & (y <= table_y + 5)
    canvas.paint(whole, np.broadcast_to(table, g.shape), 120.0, Label.PATIENT_TABLE)
    for (sa, sb, hu, label) in (
        (a, b, canvas.fat, Label.SUBCUTANEOUS_FAT),
        (a - pt.fat_mm, b - pt.fat_mm, 50.0, Label.MUSCLE),
        (a - pt.fat_mm - pt.muscle_mm, b - pt.fat_mm - pt.muscle_mm, 25.0, None),
    ):  # fmt: skip
        canvas.paint(whole, np.broadcast_to(ellipse(sa, sb) <= 1, g.shape), hu, label)
    ai, bi = a - pt.fat_mm - pt.muscle_mm, b - pt.fat_mm - pt.muscle_mm

    # Lungs above the diaphragm domes; denser in the dependent part (gravity).
    dome_left = pt.dome_z - rng.uniform(5, 20)
    big = 1e6
    for side, label in ((1, Label.LEFT_LUNG), (-1, Label.RIGHT_LUNG)):
        lx, top = cx + side * 0.48 * ai, pt.lung_top_z
        dome = pt.dome_z if side < 0 else dome_left
        box = g.index_box((lx - 0.47 * ai, cy - bi, dome - 120), (lx + 0.47 * ai, cy + bi, top))
        if box is None:
            continue
        bz, by, bx = g.coords(box)
        floor = dome - 0.004 * ((bx - lx) ** 2 + (by - cy) ** 2)  # dome surface, mm
        inside = (((bx - lx) / (0.47 * ai)) ** 2 + ((by - cy - 0.05 * bi) / (0.9 * bi)) ** 2
                  + ((bz - (top + dome - 60) / 2) / ((top - dome + 60) / 2)) ** 2 <= 1)  # fmt: skip
        inner_box = (((bx - cx) / ai) ** 2 + ((by - cy) / bi) ** 2) <= 0.97
        dependent = np.clip((by - (cy - bi)) / (2 * bi), 0, 1)
        hu = pt.lung_hu + 70 * ((1 - dependent) if pt.prone else dependent)
        shape = inside.shape
        canvas.paint(box, inside & inner_box & (bz >= floor), np.broadcast_to(hu, shape), label)
    # Under the diaphragm: liver on the right, soft tissue on the left; mediastinal fat
    # between the lungs in front of the spine.
    box = g.index_box((cx - ai, cy - bi, -big), (cx + ai, cy + bi, pt.dome_z))
    if box is not None:
        bz, by, bx = g.coords(box)
        floor = pt.dome_z - 0.004 * ((bx - cx + 0.3 * ai) ** 2 + (by - cy) ** 2)
        below = ((((bx - cx) / ai) ** 2 + ((by - cy) / bi) ** 2) <= 0.97) & (bz < floor - 3)
        canvas.paint(box, below & (bx < cx + 25), 58.0, Label.LIVER, iodine=0.25)
        canvas.paint(box, below & (bx >= cx + 25), 35.0, Label.STOMACH, iodine=0.1)
    half = rng.uniform(18, 28)
    box = g.index_box(
        (cx + 5 - half, cy - bi, pt.dome_z - 20), (cx + 5 + half, pt.spine[1], pt.lung_top_z)
    )
    if box is not None:
        bz, by, bx = g.coords(box)
        floor = pt.dome_z - 0.004 * ((bx - cx + 0.3 * ai) ** 2 + (by - cy) ** 2)
        medial = ((((bx - cx) / ai) ** 2 + ((by - cy) / bi) ** 2) <= 0.97) & (bz > floor)
        canvas.paint(box, medial, canvas.fat + 10)
    paint_heart(canvas, pt.heart)
    canvas.tube(pt.aorta.points, pt.aorta.radius, BLOOD_HU, Label.AORTA, iodine=1.0, step=2)
    _paint_airways(canvas, pt)
    _paint_spine(canvas, pt)
    _paint_ribs(canvas, pt, ai, bi, z, y, x)
    _paint_sternum(canvas, pt, bi)


def paint_heart(canvas: Canvas, heart: Heart) -> None:
    g = canvas.grid
    r = heart.bounding_radius() + 10
    box = g.index_box(heart.centre - r, heart.centre + r)
    if box is None:
        return
    z, y, x = g.coords(box)
    t, v, w = heart.local(x, y, z)
    level = heart.radial_level(t, v, w)
    # Pericardial fat round the heart, epicardial fat under its surface, then the muscle.
    canvas.paint(box, level <= 8.0, canvas.fat)
    canvas.paint(box, level <= 0, canvas.fat, Label.EPICARDIAL_FAT)
    muscle = level <= -heart.fat_mm
    canvas.paint(box, muscle, MYOCARDIUM_HU, Label.HEART, iodine=0.12)
    for name in CHAMBERS:
        cavity = (heart.chamber(name, t, v, w) <= 1) & muscle
        canvas.paint(
            box, cavity, BLOOD_HU, Label.HEART, iodine=0.9 if name in RIGHT_CHAMBERS else 1.0
        )
    for vessel in heart.vessels:
        canvas.tube(
            vessel.points, vessel.radius, BLOOD_HU, Label.CORONARY_ARTERY, iodine=1.0, step=2
        )


def _paint_airways(canvas: Canvas, pt: Patient) -> None:
    g = canvas.grid
    top = g.origin[2] + g.spacing[0] * g.shape[0] + 5
    tx, ty = pt.trachea
    trachea = np.array([[tx, ty, z] for z in np.arange(pt.carina_z, top, 2.0)])
    if len(trachea):
        r = np.full(len(trachea), pt.trachea_radius)
        canvas.tube(trachea, r + 1.5, 60.0, Label.TRACHEA)
        canvas.tube(trachea, r, AIR_HU, Label.TRACHEA)
    for angle, length, radius in ((-28, 28, 7.5), (42, 48, 6.5)):
        a = np.radians(angle)
        direction = np.array([np.sin(a), 0.15, -np.cos(a)])
        pts = np.array([tx, ty, pt.carina_z]) + np.arange(0, length, 1.5)[:, None] * direction
        canvas.tube(pts, np.full(len(pts), radius + 1.2), 60.0, Label.MAIN_BRONCHI)
        canvas.tube(pts, np.full(len(pts), radius), AIR_HU, Label.MAIN_BRONCHI)


def _bone(edge_mm, calcium: float):
    """Cortical rim (1.2 mm) and cancellous core."""
    return np.where(edge_mm < 1.2, 900.0, 230.0) * calcium


def _column_box(g: Grid, x0, x1, y0, y1):
    """A box over all slices between two x and two y positions (mm)."""
    big = 1e6
    return g.index_box((x0, y0, -big), (x1, y1, big))


def _paint_spine(canvas: Canvas, pt: Patient) -> None:
    g = canvas.grid
    sx, sy = pt.spine
    rv = pt.vertebra_radius
    box = _column_box(g, sx - rv - 16, sx + rv + 16, sy - rv - 2, sy + rv + 50)
    if box is None:
        return
    z, y, x = g.coords(box)
    dist = np.sqrt((x - sx) ** 2 + (y - sy) ** 2)  # (1, ny, nx)
    in_disc = ((z - pt.carina_z) % pt.rib_pitch) < 0.22 * pt.rib_pitch  # (nz, 1, 1)
    shape = (z.shape[0], y.shape[1], x.shape[2])
    hu = np.where(in_disc, np.float32(90), _bone(rv - dist, canvas.calcium).astype(np.float32))
    canvas.paint(box, np.broadcast_to(dist <= rv, shape), hu, Label.VERTEBRAE)
    canal_y = sy + rv + 9
    canal = np.sqrt((x - sx) ** 2 + (y - canal_y) ** 2)
    arch = ((canal <= 14) & (canal > 8)) | (
        (np.abs(x - sx) < 4) & (y > canal_y) & (y < canal_y + 30)
    )
    canvas.paint(box, np.broadcast_to(arch, shape), 900.0 * canvas.calcium, Label.VERTEBRAE)
    canvas.paint(box, np.broadcast_to(canal <= 8, shape), 12.0, Label.SPINAL_CANAL)
    canvas.paint(box, np.broadcast_to(canal <= 4.5, shape), 35.0, Label.SPINAL_CORD)


def _paint_ribs(canvas: Canvas, pt: Patient, ai, bi, z, y, x) -> None:
    """Ribs: bands just inside the muscle layer, sloping down from the spine to the front."""
    cx, cy = pt.centre
    ra, rb = ai - 6, bi - 6
    rho = np.sqrt(((x - cx) / ra) ** 2 + ((y - cy) / rb) ** 2)[0]
    radial_mm = (rho - 1) * 0.5 * (ra + rb)
    band = np.abs(radial_mm) < 3.5
    jj, ii = np.nonzero(band)
    if jj.size == 0:
        return
    # Angle from the back (0) to the front (pi), on both sides alike.
    theta = np.arctan2(np.abs(x[0, 0, ii] - cx) / ra, (y[0, jj, 0] - cy) / rb)
    front = theta > np.radians(155)  # costal cartilage near the sternum: no bone
    starts = pt.lung_top_z - 5 - pt.rib_pitch * np.arange(12)
    drop = 45.0 * (1 - np.cos(theta)) / 2  # the ribs fall towards the front
    centre_z = starts[:, None] - drop[None, :]  # (12, band)
    zs = z.ravel()
    for k, zk in enumerate(zs):
        dz = np.abs(zk - centre_z).min(axis=0)
        hit = (dz < 5.5) & ~front
        if not hit.any():
            continue
        edge = np.minimum(3.5 - np.abs(radial_mm[jj[hit], ii[hit]]), 5.5 - dz[hit])
        canvas.hu[k, jj[hit], ii[hit]] = _bone(edge, canvas.calcium)
        canvas.labels[k, jj[hit], ii[hit]] = Label.RIBS


def _paint_sternum(canvas: Canvas, pt: Patient, bi) -> None:
    g = canvas.grid
    cx, cy = pt.centre
    sy = cy - bi + 7
    box = g.index_box((cx - 16, sy - 7, pt.apex_z + 5), (cx + 16, sy + 7, pt.carina_z + 30))
    if box is None:
        return
    z, y, x = g.coords(box)
    d = np.sqrt(((x - cx) / 15) ** 2 + ((y - sy) / 6) ** 2)  # (1, ny, nx)
    shape = (z.shape[0], y.shape[1], x.shape[2])
    hu = np.broadcast_to(_bone((1 - d) * 6, canvas.calcium).astype(np.float32), shape)
    canvas.paint(box, np.broadcast_to(d <= 1, shape), hu, Label.STERNUM)
