"""The phantom patient: sampled anatomy, painted onto a canvas in anatomical order.

World coordinates are DICOM patient coordinates (LPS, mm). Every structure is placed relative
to the body outline and the heart, whose size, position and orientation are sampled per case,
so no two phantoms share a layout. The coronary tree is built on the surface of the heart in the
heart's own frame (long axis from base to apex), which lets the grooves follow any heart
position and rotation:

* left main: from the left sinus of the aortic root to the bifurcation on the AV groove;
* LAD: down the anterior interventricular groove to the apex;
* LCX: around the left atrioventricular groove towards the back;
* RCA: from the right sinus around the right atrioventricular groove, then down the posterior
  interventricular groove.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.labels import Label
from models.phantoms import materials as mat
from models.phantoms.canvas import (
    Canvas,
    ellipsoid,
    ellipsoid_bounds,
    intersect,
    paint_tube,
)
from models.phantoms.variety import DOMINANCE, STANDARD, Variety, weighted_choice

LUNG_LABELS = (int(Label.LEFT_LUNG), int(Label.RIGHT_LUNG))


@dataclass(frozen=True)
class Vessel:
    """A centreline (N x 3, mm) with a radius per point."""

    path: np.ndarray
    radii: np.ndarray


@dataclass
class Patient:
    """Everything sampled about one phantom patient (mm, LPS world coordinates)."""

    centre_xy: np.ndarray  # body centre in the axial plane
    half_width: float
    half_depth: float
    skin: float
    fat: float
    muscle: float
    rib_radius: float
    heart_centre: np.ndarray
    heart_axes: np.ndarray  # rows: long axis (base -> apex), anterior-ish, third
    heart_radii: np.ndarray
    epicardial_fat: float
    av_groove: float  # position of the AV groove along the long axis, in -1..1 (base = -1)
    groove_fat: float  # fat around the arteries in the grooves, beyond the vessel wall
    tissue: dict[str, float] = field(default_factory=dict)
    # Generator version 4 (variety.sample_heart_fat): the pericardial fat pad's extension beyond
    # the pericardium along the heart's axes (mm; zeros: no pad) and its shift forwards and
    # down (mm).
    pericardial_fat: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pericardial_fat_shift: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def wall(self) -> float:
        """Depth of the inner surface of the chest-wall muscle below the skin."""
        return self.skin + self.fat + self.muscle

    @property
    def heart_top(self) -> float:
        return float(ellipsoid_bounds(self.heart_centre, self.heart_axes, self.heart_radii)[1][2])

    @property
    def heart_bottom(self) -> float:
        return float(ellipsoid_bounds(self.heart_centre, self.heart_axes, self.heart_radii)[0][2])

    def heart_bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        radii = self.heart_radii + self.epicardial_fat + margin
        low, high = ellipsoid_bounds(self.heart_centre, self.heart_axes, radii)
        atria_low, atria_high = ellipsoid_bounds(*self.atria())
        return np.minimum(low, atria_low), np.maximum(high, atria_high)

    def surface_point(self, s: float, psi: float, lift: float = 0.0) -> np.ndarray:
        """Point on the ventricles' surface (s along the long axis, psi around it)."""
        a = self.heart_radii + lift
        ring = np.sqrt(max(1.0 - s * s, 0.0))
        e1, e2, e3 = self.heart_axes
        return (
            self.heart_centre
            + a[0] * s * e1
            + ring * (a[1] * np.cos(psi) * e2 + a[2] * np.sin(psi) * e3)
        )

    def base_centre(self) -> np.ndarray:
        return self.heart_centre - self.heart_radii[0] * self.heart_axes[0]

    def atria(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, axes, radii of one ellipsoid standing for both atria, behind the base."""
        centre = self.base_centre() + np.array([-5.0, 14.0, 10.0])
        radii = np.array([0.75 * self.heart_radii[1], 0.5 * self.heart_radii[2], 28.0])
        return centre, np.eye(3), radii

    def left_angle(self) -> float:
        """Angle psi around the long axis that faces the patient's left."""
        e1, e2, e3 = self.heart_axes
        left = np.array([1.0, 0.0, 0.0]) - e1[0] * e1
        return float(np.arctan2(left @ e3, left @ e2))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def heart_frame(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rows e1 (long axis, base to apex), e2 (towards anterior), e3 = e1 x e2."""
    phi, theta = np.radians(azimuth_deg), np.radians(elevation_deg)
    e1 = _unit([np.cos(theta) * np.cos(phi), -np.cos(theta) * np.sin(phi), -np.sin(theta)])
    anterior = np.array([0.0, -1.0, 0.0])
    e2 = _unit(anterior - (anterior @ e1) * e1)
    return np.stack([e1, e2, np.cross(e1, e2)])


def sample_patient(
    rng: np.random.Generator,
    body_width: float,
    kvp: float,
    variety: Variety = STANDARD,
    variety_rng: np.random.Generator | None = None,
) -> Patient:
    """The patient; `variety` sets the heart's ranges (variety.py), and `variety_rng` draws
    what only the broad variety adds (the heart's own size factor)."""
    scale = body_width / 340.0
    turn, shift = variety.heart_turn_deg / 15.0, variety.heart_shift_mm / 25.0
    half_width = body_width / 2
    half_depth = half_width * rng.uniform(0.66, 0.85)
    centre = np.array([rng.uniform(-10, 10), rng.uniform(-15, 15)])
    fat = float(np.clip(rng.normal(14, 6) * scale**2, 3, 45))
    muscle = float(rng.uniform(6, 14) * np.sqrt(scale))
    # Heart: size with the body, orientation +-15 deg and position +-25 mm around the usual
    # (the standard variety; the broad one scales these ranges and adds a size factor).
    heart_radii = np.array([rng.uniform(48, 60), rng.uniform(35, 44), rng.uniform(32, 40)])
    heart_radii *= np.clip(scale, 0.85, 1.15)
    if variety_rng is not None and variety.heart_scale != (1.0, 1.0):
        heart_radii *= variety_rng.uniform(*variety.heart_scale)
    axes = heart_frame(45 + turn * rng.uniform(-15, 15), 32 + turn * rng.uniform(-15, 15))
    roll = np.radians(turn * rng.uniform(-15, 15))
    e1, e2, e3 = axes
    axes = np.stack(
        [e1, np.cos(roll) * e2 + np.sin(roll) * e3, -np.sin(roll) * e2 + np.cos(roll) * e3]
    )
    usual = np.array([centre[0] + 0.07 * half_width + 10, centre[1] - 0.3 * half_depth, 0.0])
    heart_centre = usual + shift * rng.uniform(-25, 25, size=3)
    cf, ff = mat.calcium_factor(kvp), mat.fat_factor(kvp)
    jitter = lambda sd: rng.normal(0, sd)  # noqa: E731 - a one-line per-tissue jitter
    tissue = {
        "fat": mat.FAT * ff + jitter(6),
        "skin": mat.SOFT_TISSUE + 10 + jitter(5),
        "muscle": mat.MUSCLE + jitter(4),
        "soft": mat.SOFT_TISSUE + jitter(4),
        "lung": mat.LUNG + jitter(25),
        "blood": mat.BLOOD + jitter(4),
        "myocardium": mat.MYOCARDIUM + jitter(4),
        "liver": mat.LIVER + jitter(5),
        "spleen": mat.SPLEEN + jitter(4),
        "csf": mat.CSF + jitter(3),
        "cartilage": mat.CARTILAGE + jitter(20),
        "cancellous": mat.CANCELLOUS_BONE * cf + jitter(30),
        "cortical": mat.CORTICAL_BONE * cf + jitter(100),
    }
    patient = Patient(
        centre_xy=centre,
        half_width=half_width,
        half_depth=half_depth,
        skin=float(rng.uniform(1.5, 2.5)),
        fat=fat,
        muscle=muscle,
        rib_radius=float(rng.uniform(4.0, 5.5)),
        heart_centre=heart_centre,
        heart_axes=axes,
        heart_radii=heart_radii,
        epicardial_fat=float(rng.uniform(1.5, 5.0)),
        av_groove=float(rng.uniform(-0.6, -0.45)),
        groove_fat=float(rng.uniform(2.0, 6.0)),
        tissue=tissue,
    )
    # Keep the ventricles (with their fat) between the anterior chest wall and the space in
    # front of the spine that the descending aorta and esophagus need.
    low, high = ellipsoid_bounds(heart_centre, axes, heart_radii + patient.epicardial_fat + 2.0)
    reach_front, reach_back = heart_centre[1] - low[1], high[1] - heart_centre[1]
    front = centre[1] - half_depth + patient.wall - 5.0 + reach_front  # may touch the wall
    back = spine_front(patient) - 28.0 - reach_back
    patient.heart_centre[1] = np.clip(heart_centre[1], front, max(front, back))
    return patient


# --- body wall --------------------------------------------------------------------------------


def _ellipse_distance(x, y, cx, cy, a, b):
    """First-order signed distance to the ellipse ((x-cx)/a)^2 + ((y-cy)/b)^2 = 1 (mm)."""
    u, v = (x - cx) / a, (y - cy) / b
    q = u * u + v * v
    grad = 2.0 * np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (q - 1.0) / np.maximum(grad, 1e-6)


def body_section(p: Patient, depth, x, y):
    """Signed distance (2-D) to the body outline shrunk by `depth` mm (a layer boundary)."""
    return _ellipse_distance(
        x, y, p.centre_xy[0], p.centre_xy[1], p.half_width - depth, p.half_depth - depth
    )


def paint_body(canvas: Canvas, p: Patient) -> None:
    """Skin, subcutaneous fat, muscle and the soft tissue inside, as nested outlines.

    The outline is the same on every slice, so each layer is computed once on a 2-D grid
    and broadcast along z.
    """
    x, y = canvas.x[None, :], canvas.y[:, None]
    t = p.tissue
    # Subcutaneous fat is thicker at the front and sides than on the back (the patient lies on it).
    fat = p.fat * (1.0 - 0.35 * np.clip((y - p.centre_xy[1]) / p.half_depth, -1, 1))
    layers = [  # (depth below the skin surface, HU inside it, label inside it)
        (0.0, t["skin"], Label.SUBCUTANEOUS_FAT),
        (p.skin, t["fat"], Label.SUBCUTANEOUS_FAT),
        (p.skin + fat, t["muscle"], Label.MUSCLE),
        (p.skin + fat + p.muscle, t["soft"], Label.BACKGROUND),
    ]
    hu = np.full((canvas.y.size, canvas.x.size), mat.AIR, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for depth, value, label in layers:
        cover = canvas.coverage(body_section(p, depth, x, y))
        hu += cover * (value - hu)
        labels[cover > 0.5] = label
    inside = labels > 0
    canvas.hu[:, inside] = hu[inside]
    canvas.labels[:, inside] = labels[inside]
    edge = (hu > mat.AIR) & ~inside  # partial-volume rim outside the skin
    canvas.hu[:, edge] = hu[edge]


def paint_table(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """A carbon-fibre table top under the patient: thin dense shell around a foam core."""
    top = p.centre_xy[1] + p.half_depth + rng.uniform(2, 25)
    width = rng.uniform(190, 230)
    for inset, value in ((0.0, mat.TABLE_SHELL), (2.0, mat.TABLE_FOAM)):
        y0, y1, half = top + inset, top + 45 - inset, width - inset

        def slab(x, y, z, y0=y0, y1=y1, half=half):
            return np.maximum(np.maximum(y0 - y, y - y1), np.abs(x - p.centre_xy[0]) - half) + 0 * z

        canvas.paint(slab, [-half - 1, y0, -1e4], [half + 1, y1, 1e4], value, Label.PATIENT_TABLE)


# --- lungs, diaphragm and upper abdomen ------------------------------------------------------


@dataclass(frozen=True)
class Levels:
    """Craniocaudal landmarks (world z, mm)."""

    apex: float
    sternal_notch: float
    arch: float
    carina: float
    dome_right: float
    dome_left: float


def sample_levels(p: Patient, rng: np.random.Generator) -> Levels:
    dome_right = p.heart_bottom + rng.uniform(-5, 15)
    carina = p.heart_top + rng.uniform(5, 25)
    arch = carina + rng.uniform(12, 25)
    return Levels(
        apex=arch + rng.uniform(60, 90),
        sternal_notch=arch + rng.uniform(15, 30),
        arch=arch,
        carina=carina,
        dome_right=dome_right,
        dome_left=dome_right - rng.uniform(8, 20),
    )


def _dome(p: Patient, top: float, side: float, curvature: float):
    """Height of a diaphragm dome at (x, y): a paraboloid peaking over one hemithorax."""
    cx = p.centre_xy[0] + side * 0.45 * p.half_width
    cy = p.centre_xy[1]

    def height(x, y):
        return top - curvature * ((x - cx) ** 2 + 0.7 * (y - cy) ** 2)

    return height


def paint_lungs(canvas: Canvas, p: Patient, lv: Levels, rng: np.random.Generator) -> None:
    t = p.tissue
    lung_depth = p.wall + 2 * p.rib_radius + 1.0
    curvature = rng.uniform(0.005, 0.009)
    y_back = p.centre_xy[1] + p.half_depth

    def lung_value(x, y, z):
        # Dependent lung is denser: about +50 HU from front to back in a supine patient.
        gradient = (y - (p.centre_xy[1] - p.half_depth)) / (2 * p.half_depth)
        return t["lung"] + 50.0 * gradient + 0 * x + 0 * z

    for side, label, dome_top in (
        (-1, Label.RIGHT_LUNG, lv.dome_right),
        (1, Label.LEFT_LUNG, lv.dome_left),
    ):
        dome = _dome(p, dome_top, side, curvature)
        apex = _dome(p, lv.apex, side, 0.004)
        medial = p.centre_xy[0] + side * rng.uniform(0.8, 2.0)  # junction lines

        def distance(x, y, z, side=side, dome=dome, apex=apex, medial=medial):
            inner = body_section(p, lung_depth, x, y)
            return np.maximum(
                np.maximum(inner, side * (medial - x)),
                np.maximum(dome(x, y) - z, z - apex(x, y)),
            )

        low = [
            p.centre_xy[0] - p.half_width if side < 0 else medial,
            p.centre_xy[1] - p.half_depth,
            dome_top - 120,
        ]
        high = [medial if side < 0 else p.centre_xy[0] + p.half_width, y_back, lv.apex]
        canvas.paint(distance, low, high, lung_value, label)


def paint_upper_abdomen(canvas: Canvas, p: Patient, lv: Levels, rng: np.random.Generator) -> None:
    """Liver dome under the right hemidiaphragm, stomach and spleen under the left."""
    t = p.tissue
    curvature = 0.007
    below_right = _dome(p, lv.dome_right - 4, -1, curvature)
    below_left = _dome(p, lv.dome_left - 4, 1, curvature)
    cx, cy = p.centre_xy
    inner = lambda x, y, z: body_section(p, p.wall + 3, x, y) + 0 * z  # noqa: E731
    liver_edge = cx + rng.uniform(0.1, 0.4) * p.half_width
    liver = intersect(
        inner, lambda x, y, z: z - below_right(x, y), lambda x, y, z: x - liver_edge + 0 * y + 0 * z
    )
    canvas.paint(
        liver,
        [cx - p.half_width, cy - p.half_depth, lv.dome_right - 250],
        [liver_edge, cy + p.half_depth, lv.dome_right],
        t["liver"],
        Label.LIVER,
    )

    under_left = lambda x, y, z: z - below_left(x, y)  # noqa: E731
    spleen_c = [cx + 0.55 * p.half_width, cy + 0.4 * p.half_depth, lv.dome_left - 45]
    spleen_r = [rng.uniform(20, 30), rng.uniform(35, 50), rng.uniform(40, 55)]
    canvas.paint(
        intersect(ellipsoid(spleen_c, np.eye(3), spleen_r), under_left, inner),
        *ellipsoid_bounds(spleen_c, np.eye(3), spleen_r),
        t["spleen"],
        Label.SPLEEN,
    )

    stomach_c = np.array([cx + 0.35 * p.half_width, cy - 0.05 * p.half_depth, lv.dome_left - 50])
    stomach_r = [rng.uniform(30, 45), rng.uniform(35, 50), rng.uniform(35, 50)]
    stomach = intersect(ellipsoid(stomach_c, np.eye(3), stomach_r), under_left, inner)
    canvas.paint(stomach, *ellipsoid_bounds(stomach_c, np.eye(3), stomach_r), 25.0, Label.STOMACH)
    gas_level = stomach_c[2] + rng.uniform(0.3, 0.85) * stomach_r[2]
    gas = intersect(stomach, lambda x, y, z: gas_level - z + 0 * x + 0 * y)
    canvas.paint(gas, *ellipsoid_bounds(stomach_c, np.eye(3), stomach_r), mat.AIR, None)


def pulmonary_vessel_trees(p: Patient, lv: Levels, rng: np.random.Generator) -> list[Vessel]:
    """Branching vessel trees growing from each hilum into the lungs."""
    trees: list[Vessel] = []
    for side in (-1, 1):
        hilum = np.array(
            [p.centre_xy[0] + side * 0.3 * p.half_width, p.centre_xy[1], lv.carina - 20]
        )
        stack = []
        for _ in range(rng.integers(5, 8)):
            direction = _unit(rng.normal(size=3) + np.array([side * 1.2, 0.0, 0.0]))
            stack.append((hilum, direction, rng.uniform(30, 45), rng.uniform(4.0, 5.5), 0))
        while stack:
            start, direction, length, radius, generation = stack.pop()
            end = start + direction * length
            trees.append(Vessel(np.stack([start, end]), np.array([radius, radius * 0.85])))
            if generation < 5:
                for _ in range(2):
                    child = _unit(direction + rng.normal(scale=0.55, size=3))
                    stack.append(
                        (end, child, length * rng.uniform(0.6, 0.8), radius * 0.7, generation + 1)
                    )
    return trees


# --- mediastinum ----------------------------------------------------------------------------


def spine_front(p: Patient) -> float:
    """y of the anterior surface of the vertebral bodies."""
    return p.centre_xy[1] + p.half_depth - p.wall - 62.0


def paint_spine(
    canvas: Canvas, p: Patient, z_range: tuple[float, float], rng: np.random.Generator
) -> None:
    t = p.tissue
    cx = p.centre_xy[0]
    front = spine_front(p)
    rx, ry = rng.uniform(17, 23), rng.uniform(14, 17)
    body_y = front + ry
    canal_y = front + 2 * ry + 8
    period = rng.uniform(25, 29)
    disc = rng.uniform(5, 7)
    phase = rng.uniform(0, period)
    z_lo, z_hi = z_range
    eye = np.eye(3)

    def column(x, y, z, a, b):
        return _ellipse_distance(x, y, cx, body_y, a, b) + 0 * z

    # Discs fill the column; each vertebral body is a cylinder with a cortical shell.
    canvas.paint(
        lambda x, y, z: column(x, y, z, rx, ry),
        [cx - rx, front, z_lo],
        [cx + rx, front + 2 * ry, z_hi],
        85.0,
        None,
    )
    for z0 in np.arange(z_lo - period + phase, z_hi + period, period):
        zc, half = z0 + period / 2, (period - disc) / 2
        for shrink, value in ((0.0, t["cortical"]), (1.5, t["cancellous"])):

            def vertebra(x, y, z, zc=zc, half=half, shrink=shrink):
                return np.maximum(
                    column(x, y, z, rx - shrink, ry - shrink), np.abs(z - zc) - (half - shrink)
                )

            canvas.paint(
                vertebra,
                [cx - rx, front, zc - half],
                [cx + rx, front + 2 * ry, zc + half],
                value,
                Label.VERTEBRAE,
            )
        # Posterior elements: lamina ring, spinous and transverse processes.
        ring_c = [cx, canal_y, zc]
        canvas.paint(
            ellipsoid(ring_c, eye, [13.0, 12.0, half]),
            *ellipsoid_bounds(ring_c, eye, [13, 12, half]),
            t["cortical"] * 0.6,
            Label.VERTEBRAE,
        )
        spinous = Vessel(
            np.array([[cx, canal_y + 8, zc], [cx, canal_y + 30, zc - 12]]), np.array([4.0, 3.0])
        )
        paint_tube(canvas, spinous.path, spinous.radii, t["cortical"] * 0.6, Label.VERTEBRAE)
        for side in (-1, 1):
            transverse = np.array([[cx + side * 8, canal_y, zc], [cx + side * 30, canal_y + 8, zc]])
            paint_tube(
                canvas, transverse, np.array([4.5, 4.0]), t["cortical"] * 0.6, Label.VERTEBRAE
            )
    # Spinal canal (CSF) and cord run through all levels.
    canal = lambda x, y, z: _ellipse_distance(x, y, cx, canal_y, 8.0, 7.5) + 0 * z  # noqa: E731
    canvas.paint(
        canal,
        [cx - 9, canal_y - 9, z_lo],
        [cx + 9, canal_y + 9, z_hi],
        t["csf"],
        Label.SPINAL_CANAL,
    )
    cord = lambda x, y, z: _ellipse_distance(x, y, cx, canal_y, 5.0, 4.0) + 0 * z  # noqa: E731
    canvas.paint(
        cord,
        [cx - 6, canal_y - 6, z_lo],
        [cx + 6, canal_y + 6, z_hi],
        mat.SOFT_TISSUE,
        Label.SPINAL_CORD,
    )


def paint_ribs_and_sternum(
    canvas: Canvas, p: Patient, lv: Levels, rng: np.random.Generator
) -> None:
    t = p.tissue
    cx, cy = p.centre_xy
    r = p.rib_radius
    depth = p.wall - 1.0 + r  # rib centreline just inside the chest-wall muscle
    a, b = p.half_width - depth, p.half_depth - depth
    spacing = rng.uniform(22, 28)
    drop = rng.uniform(70, 120)
    sternum_y = cy - p.half_depth + p.wall + 4.0
    for i in range(12):
        z_start = lv.apex - 10 - i * spacing
        n_true = i < 7  # ribs 1-7 join the sternum through costal cartilage
        for side in (-1, 1):
            beta = np.radians(np.linspace(100, -55, 16))
            path = np.stack(
                [
                    cx + side * a * np.cos(beta),
                    cy + b * np.sin(beta),
                    z_start - drop * ((np.radians(100) - beta) / np.radians(155)) ** 1.2,
                ],
                axis=1,
            )
            path[0, 0] = cx + side * 28  # the head of the rib meets the transverse process
            path[0, 1] = spine_front(p) + 40
            for shrink, value in ((0.0, t["cortical"]), (1.3, t["cancellous"])):
                paint_tube(canvas, path, np.full(len(path), r - shrink), value, Label.RIBS)
            if n_true:
                cartilage = np.stack([path[-1], [cx + side * 14, sternum_y, path[-1][2] - 5]])
                paint_tube(canvas, cartilage, np.array([r, r]), t["cartilage"], Label.RIBS)
    # Sternum: a flattened column from the notch to the xiphoid.
    z_top, z_bottom = lv.sternal_notch, p.heart_bottom - rng.uniform(5, 25)
    for shrink, value in ((0.0, t["cortical"]), (1.2, t["cancellous"])):

        def sternum(x, y, z, shrink=shrink):
            return np.maximum(
                _ellipse_distance(x, y, cx, sternum_y, 15 - shrink, 6.5 - shrink),
                np.maximum(z_bottom - z, z - z_top) + shrink,
            )

        canvas.paint(
            sternum,
            [cx - 16, sternum_y - 7, z_bottom],
            [cx + 16, sternum_y + 7, z_top],
            value,
            Label.STERNUM,
        )


@dataclass(frozen=True)
class Mediastinum:
    """Landmarks of the great vessels and airways that the calcium placement needs."""

    aorta: Vessel
    aortic_root: np.ndarray
    aortic_root_radius: float
    descending_aorta: Vessel
    esophagus: Vessel
    trachea: Vessel  # axis from above the scan to the carina; radius of the air lumen
    hila: tuple[np.ndarray, np.ndarray]  # right, left: where the main bronchi end
    pulmonary_bifurcation: np.ndarray

    def repaint_posterior(self, canvas: Canvas, p: Patient) -> None:
        """Paint the descending aorta and the esophagus again, over a heart that was placed
        against them: they are firm tubes that the heart lies in front of, never inside."""
        for vessel, value, label in (
            (self.esophagus, p.tissue["muscle"] - 5, Label.ESOPHAGUS),
            (self.descending_aorta, p.tissue["blood"], Label.AORTA),
        ):
            paint_tube(canvas, vessel.path, vessel.radii, value, label)


def paint_mediastinum(
    canvas: Canvas, p: Patient, lv: Levels, z_range: tuple[float, float], rng: np.random.Generator
) -> Mediastinum:
    t = p.tissue
    cx, cy = p.centre_xy
    front = spine_front(p)
    z_lo, z_hi = z_range
    eye = np.eye(3)
    # Mediastinal fat in front of the heart and great vessels (thymic remnant).
    fat_c = [cx + 5, cy - 0.5 * p.half_depth, lv.arch - 15]
    fat_r = [rng.uniform(18, 30), 0.16 * p.half_depth, rng.uniform(30, 50)]
    canvas.paint(
        ellipsoid(fat_c, eye, fat_r), *ellipsoid_bounds(fat_c, eye, fat_r), p.tissue["fat"], None
    )

    # Esophagus and trachea with main bronchi (air lumen inside a soft-tissue wall).
    eso_x = cx + rng.uniform(3, 15)
    esophagus = np.array([[eso_x, front - 8, z_hi + 20], [eso_x + 5, front - 10, z_lo - 20]])
    paint_tube(canvas, esophagus, np.array([8.0, 8.0]), t["muscle"] - 5, Label.ESOPHAGUS)
    paint_tube(canvas, esophagus, np.array([2.0, 2.0]), mat.AIR, None)
    trachea_r = rng.uniform(8, 11)
    trachea = np.array([[cx, front - 30, z_hi + 20], [cx + 2, front - 24, lv.carina]])
    paint_tube(canvas, trachea, np.array([trachea_r + 2, trachea_r + 2]), t["soft"], Label.TRACHEA)
    paint_tube(canvas, trachea, np.array([trachea_r, trachea_r]), mat.AIR, Label.TRACHEA)
    for side in (-1, 1):
        hilum = np.array([cx + side * 0.3 * p.half_width, cy, lv.carina - 20])
        bronchus = np.array([trachea[-1], hilum])
        paint_tube(canvas, bronchus, np.array([8.0, 5.5]), t["soft"], Label.MAIN_BRONCHI)
        paint_tube(canvas, bronchus, np.array([6.0, 3.5]), mat.AIR, Label.MAIN_BRONCHI)

    # Aorta: root at the heart base, ascending, arch, descending beside the spine.
    r_asc, r_desc = rng.uniform(13, 19), rng.uniform(10, 14)
    root = p.base_centre() + np.array([-8.0, 5.0, 12.0]) + rng.uniform(-4, 4, 3)
    ascending_top = np.array([cx - 5 + rng.uniform(-8, 8), root[1] - 8, lv.arch])
    descending_top = np.array([cx + 20 + rng.uniform(-5, 5), front - r_desc + 4, lv.arch])
    arch_peak = np.array(
        [
            0.5 * (ascending_top[0] + descending_top[0]),
            0.5 * (ascending_top[1] + descending_top[1]),
            lv.arch + 25,
        ]
    )
    s = np.linspace(0, 1, 12)[:, None]
    arch = (1 - s) ** 2 * ascending_top + 2 * s * (1 - s) * arch_peak + s**2 * descending_top
    ascending = np.linspace(root, ascending_top, 6)
    descending = np.linspace(
        descending_top, [descending_top[0] + 5, descending_top[1] + 5, z_lo - 30], 8
    )
    path = np.concatenate([ascending, arch[1:], descending[1:]])
    radii = np.concatenate([np.full(6, r_asc), np.linspace(r_asc, r_desc, 11), np.full(7, r_desc)])
    aorta = Vessel(path, radii)
    paint_tube(canvas, path, radii, t["blood"], Label.AORTA)

    # Pulmonary trunk from the right-ventricular outflow to both hila.
    outflow = p.surface_point(-0.7, -0.25 * np.sign(p.left_angle()) * np.pi / 2)
    bifurcation = np.array([cx + 12, root[1] + 5, lv.carina - 8])
    paint_tube(
        canvas,
        np.stack([outflow, bifurcation]),
        np.array([13.0, 12.0]),
        t["blood"],
        Label.PULMONARY_VESSELS,
    )
    for side in (-1, 1):
        hilum = np.array([cx + side * 0.3 * p.half_width, cy + 5, lv.carina - 18])
        paint_tube(
            canvas,
            np.stack([bifurcation, hilum]),
            np.array([10.0, 8.0]),
            t["blood"],
            Label.PULMONARY_VESSELS,
        )
    # Superior vena cava, right of the ascending aorta.
    svc = np.array([[cx - 30, root[1] - 2, z_hi + 20], [cx - 25, root[1] + 5, root[2]]])
    paint_tube(canvas, svc, np.array([9.0, 10.0]), t["blood"], None)
    return Mediastinum(
        aorta=aorta,
        aortic_root=root,
        aortic_root_radius=r_asc,
        descending_aorta=Vessel(descending, np.full(len(descending), r_desc)),
        esophagus=Vessel(esophagus, np.array([8.0, 8.0])),
        trachea=Vessel(trachea, np.array([trachea_r, trachea_r])),
        hila=tuple(
            np.array([cx + side * 0.3 * p.half_width, cy, lv.carina - 20]) for side in (-1, 1)
        ),
        pulmonary_bifurcation=bifurcation,
    )


# --- heart and coronary arteries --------------------------------------------------------------


@dataclass(frozen=True)
class CoronaryTree:
    left_main: Vessel
    lad: Vessel
    lcx: Vessel
    rca: Vessel
    dominance: str = "right"  # which artery gives the posterior descending artery

    def by_label(self) -> dict[Label, Vessel]:
        return {
            Label.CAC_LEFT_MAIN: self.left_main,
            Label.CAC_LAD: self.lad,
            Label.CAC_LCX: self.lcx,
            Label.CAC_RCA: self.rca,
        }


def coronary_tree(
    p: Patient,
    med: Mediastinum,
    rng: np.random.Generator,
    variety_rng: np.random.Generator | None = None,
) -> CoronaryTree:
    """The coronary tree on the heart's surface. With `variety_rng` (the broad variety,
    variety.py) the courses vary further: the circulation's dominance decides whether the
    posterior descending artery comes from the RCA or the LCX, the LAD's angle and the
    reach of LCX and RCA around the groove widen, and the vessels meander."""
    lift = p.epicardial_fat * 0.4 + 1.0  # centreline inside the epicardial fat
    psi_left = p.left_angle()
    sign = np.sign(psi_left) or 1.0
    psi_lad = psi_left * rng.uniform(0.35, 0.55)
    s_av = p.av_groove
    course = _CourseVariation.sample(variety_rng)
    psi_lad += sign * course.lad_angle

    def along(s_values, psi_values):
        t = np.linspace(0.0, 1.0, len(s_values))
        meander = course.meander(t)  # across the groove: a change of psi at the mm scale
        psi_values = psi_values + meander / max(float(p.heart_radii[1]), 1.0)
        return np.stack(
            [p.surface_point(s, psi, lift) for s, psi in zip(s_values, psi_values, strict=True)]
        )

    n = 24
    lad_s = np.linspace(s_av, rng.uniform(0.85, 0.97), n)
    lad = along(lad_s, psi_lad + rng.normal(0, 0.05) * np.linspace(0, 1, n))
    lcx_end = sign * (abs(psi_left) + np.radians(rng.uniform(50, 100) + course.lcx_extra_deg))
    rca_start = -sign * np.radians(rng.uniform(15, 35))
    posterior_groove = psi_lad - sign * np.pi
    pda = along(np.linspace(s_av, rng.uniform(0.0, 0.4), 8), np.full(8, posterior_groove))
    if course.dominance == "left":
        # The LCX runs on to the posterior groove and gives the posterior descending artery;
        # the RCA ends on the right side of the groove.
        lcx = np.concatenate(
            [along(np.full(n, s_av), np.linspace(psi_lad, posterior_groove, n)), pda[1:]]
        )
        rca_end = rca_start + (posterior_groove - rca_start) * course.short_reach
        rca = along(np.full(n, s_av), np.linspace(rca_start, rca_end, n))
    else:
        # Co-dominant: the LCX also reaches (almost) the posterior groove.
        reach = posterior_groove + sign * 0.2 if course.dominance == "codominant" else lcx_end
        lcx = along(np.full(n, s_av), np.linspace(psi_lad, reach, n))
        rca_ring = along(np.full(n, s_av), np.linspace(rca_start, posterior_groove, n))
        rca = np.concatenate([rca_ring, pda[1:]])

    root, r_root = med.aortic_root, med.aortic_root_radius
    lm_start = root + r_root * _unit(lad[0] - root)
    rca_origin = root + r_root * _unit(rca[0] - root)
    left_main = np.linspace(lm_start, lad[0], 5)
    rca = np.concatenate([np.linspace(rca_origin, rca[0], 5)[:-1], rca])
    size = rng.uniform(0.85, 1.15)
    return CoronaryTree(
        left_main=Vessel(left_main, np.full(5, 2.3 * size)),
        lad=Vessel(lad, np.linspace(2.0, 0.9, n) * size),
        lcx=Vessel(lcx, np.linspace(1.8, 0.9, len(lcx)) * size),
        rca=Vessel(rca, np.linspace(2.0, 1.0, len(rca)) * size),
        dominance=course.dominance,
    )


@dataclass(frozen=True)
class _CourseVariation:
    """What the broad variety changes about the coronary courses (none by default)."""

    dominance: str = "right"
    lad_angle: float = 0.0  # radians added to the LAD's angle towards the left
    lcx_extra_deg: float = 0.0  # further reach of a non-dominant LCX
    short_reach: float = 1.0  # how far a non-dominant RCA runs towards the posterior groove
    meander_mm: float = 0.0
    meander_waves: float = 0.0
    meander_phase: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator | None) -> _CourseVariation:
        if rng is None:
            return cls()
        return cls(
            dominance=weighted_choice(rng, DOMINANCE),
            lad_angle=float(rng.uniform(-0.25, 0.25)),
            lcx_extra_deg=float(rng.uniform(-30, 30)),
            short_reach=float(rng.uniform(0.3, 0.7)),
            meander_mm=float(rng.uniform(0.0, 5.0)),
            meander_waves=float(rng.uniform(1.0, 4.0)),
            meander_phase=float(rng.uniform(0, 2 * np.pi)),
        )

    def meander(self, t: np.ndarray) -> np.ndarray:
        """Sideways displacement (mm) along a vessel at fractions t of its length."""
        return self.meander_mm * np.sin(2 * np.pi * self.meander_waves * t + self.meander_phase)


def paint_atria(canvas: Canvas, p: Patient) -> None:
    """Both atria, painted before the posterior mediastinum so that the descending aorta,
    the esophagus and the spine keep their shape where they touch."""
    atria_c, atria_axes, atria_r = p.atria()
    canvas.paint(
        ellipsoid(atria_c, atria_axes, atria_r),
        *ellipsoid_bounds(atria_c, atria_axes, atria_r),
        p.tissue["blood"],
        Label.HEART,
    )


def paint_heart(canvas: Canvas, p: Patient, tree: CoronaryTree) -> None:
    """Pericardium, epicardial fat, ventricles and the coronary arteries in their grooves."""
    t = p.tissue
    c, axes = p.heart_centre, p.heart_axes
    pericardium = p.heart_radii + p.epicardial_fat + 1.2
    if np.any(p.pericardial_fat > 0):
        # Pericardial fat takes the place of the lung next to the heart (and of nothing else:
        # the chest wall, great vessels and spine keep what they are).
        forwards, down = p.pericardial_fat_shift
        pad_c = c + np.array([0.0, -forwards, -down])  # LPS: anterior is -y, down is -z
        pad = pericardium + p.pericardial_fat
        canvas.paint(
            ellipsoid(pad_c, axes, pad),
            *ellipsoid_bounds(pad_c, axes, pad),
            t["fat"],
            Label.BACKGROUND,
            only_labels=LUNG_LABELS + (int(Label.PULMONARY_VESSELS),),
        )
    canvas.paint(
        ellipsoid(c, axes, pericardium), *ellipsoid_bounds(c, axes, pericardium), t["soft"], None
    )
    fat = p.heart_radii + p.epicardial_fat
    canvas.paint(
        ellipsoid(c, axes, fat), *ellipsoid_bounds(c, axes, fat), t["fat"], Label.EPICARDIAL_FAT
    )
    canvas.paint(
        ellipsoid(c, axes, p.heart_radii),
        *ellipsoid_bounds(c, axes, p.heart_radii),
        t["myocardium"],
        Label.HEART,
    )
    cavity = p.heart_radii - np.array([12.0, 10.0, 10.0])
    canvas.paint(
        ellipsoid(c, axes, cavity), *ellipsoid_bounds(c, axes, cavity), t["blood"], Label.HEART
    )
    # Epicardial fat is thickest in the grooves the arteries run in.
    for vessel in tree.by_label().values():
        paint_tube(canvas, vessel.path, vessel.radii + p.groove_fat, t["fat"], Label.EPICARDIAL_FAT)
    for vessel in tree.by_label().values():
        paint_tube(canvas, vessel.path, vessel.radii, t["blood"], Label.CORONARY_ARTERY)


@dataclass(frozen=True)
class Anatomy:
    patient: Patient
    levels: Levels
    mediastinum: Mediastinum
    coronaries: CoronaryTree


def paint_anatomy(
    canvas: Canvas,
    p: Patient,
    lv: Levels,
    rng: np.random.Generator,
    variety_rng: np.random.Generator | None = None,
) -> Anatomy:
    """Paint the whole patient, outside in, and return the landmarks calcium placement needs
    (`variety_rng`: the broad variety's coronary courses, see coronary_tree)."""
    z_range = (float(canvas.z.min()) - 5, float(canvas.z.max()) + 5)
    paint_table(canvas, p, rng)
    paint_body(canvas, p)
    paint_lungs(canvas, p, lv, rng)
    for vessel in pulmonary_vessel_trees(p, lv, rng):
        paint_tube(
            canvas,
            vessel.path,
            vessel.radii,
            p.tissue["blood"],
            Label.PULMONARY_VESSELS,
            only_labels=LUNG_LABELS,
        )
    paint_upper_abdomen(canvas, p, lv, rng)
    paint_atria(canvas, p)
    paint_spine(canvas, p, z_range, rng)
    paint_ribs_and_sternum(canvas, p, lv, rng)
    med = paint_mediastinum(canvas, p, lv, z_range, rng)
    tree = coronary_tree(p, med, rng, variety_rng)
    paint_heart(canvas, p, tree)
    med.repaint_posterior(canvas, p)
    return Anatomy(patient=p, levels=lv, mediastinum=med, coronaries=tree)
