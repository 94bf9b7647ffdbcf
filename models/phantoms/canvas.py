"""Painting signed-distance shapes onto a CT grid with partial volume.

A shape is a function of world coordinates that returns an (approximate) signed distance in mm:
negative inside. Each shape is evaluated only inside its bounding box. Where the surface cuts a
voxel, the voxel takes the fraction `clip(0.5 - d / pixel, 0, 1)` of the new value: the
analytic partial-volume ramp of a box-shaped pixel. Calcifications, whose ground truth depends
on partial volume in detail, are rendered by explicit supersampling instead (calcium.py).

Shapes are painted in anatomical order: later shapes cover earlier ones, and a voxel's label is
the last shape that covers more than half of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.phantoms.geometry import Grid, index_range

Field = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Canvas:
    grid: Grid
    hu: np.ndarray  # float32 (k, j, i), before blur and noise
    labels: np.ndarray  # uint8 (k, j, i)
    x: np.ndarray  # world coordinate vectors of the grid axes
    y: np.ndarray
    z: np.ndarray

    @classmethod
    def empty(cls, grid: Grid, background_hu: float) -> Canvas:
        return cls(
            grid=grid,
            hu=np.full(grid.shape, background_hu, dtype=np.float32),
            labels=np.zeros(grid.shape, dtype=np.uint8),
            x=grid.x().astype(np.float32),
            y=grid.y().astype(np.float32),
            z=grid.z().astype(np.float32),
        )

    @property
    def pixel_mm(self) -> float:
        return float(0.5 * (self.grid.spacing[0] + self.grid.spacing[1]))

    def box(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index box of the world-space bounding box [low, high] (x, y, z), or None if empty."""
        pad = self.pixel_mm
        box = (
            index_range(self.z, low[2] - self.grid.spacing[2], high[2] + self.grid.spacing[2]),
            index_range(self.y, low[1] - pad, high[1] + pad),
            index_range(self.x, low[0] - pad, high[0] + pad),
        )
        if any(s.stop <= s.start for s in box):
            return None
        return box

    def coords(self, box: tuple[slice, slice, slice]):
        """Broadcastable world coordinates (x, y, z) of a box."""
        return (
            self.x[box[2]][None, None, :],
            self.y[box[1]][None, :, None],
            self.z[box[0]][:, None, None],
        )

    def coverage(self, distance: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - distance / self.pixel_mm, 0.0, 1.0)

    def paint(
        self,
        distance: Field,
        low,
        high,
        value: float | Field,
        label: int | None,
        *,
        only_labels: tuple[int, ...] | None = None,
    ) -> None:
        """Paint a shape given by its signed-distance field within [low, high].

        value: a constant HU or a field of (x, y, z) for textured tissue.
        label: label value for voxels more than half covered; None keeps the labels.
        only_labels: restrict painting to voxels that currently carry one of these labels
        (vessels inside the lungs, for instance).
        """
        box = self.box(np.asarray(low, dtype=float), np.asarray(high, dtype=float))
        if box is None:
            return
        x, y, z = self.coords(box)
        cover = self.coverage(distance(x, y, z))
        labels = self.labels[box]
        if only_labels is not None:
            cover = cover * np.isin(labels, only_labels)
        new = value(x, y, z) if callable(value) else value
        hu = self.hu[box]
        hu += cover * (new - hu)
        if label is not None:
            labels[cover > 0.5] = label


# --- signed-distance fields (mm, negative inside) -------------------------------------------


def ellipsoid(centre, axes, radii) -> Field:
    """Ellipsoid with orthonormal `axes` (3 row vectors) and semi-axes `radii`.

    First-order distance (q - 1) / |grad q|: exact on the surface, which is all the
    partial-volume ramp needs; the sign is right everywhere.
    """
    centre = np.asarray(centre, dtype=np.float32)
    axes = np.asarray(axes, dtype=np.float32)
    inv_r2 = 1.0 / np.asarray(radii, dtype=np.float32) ** 2

    def field(x, y, z):
        dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
        u = [a[0] * dx + a[1] * dy + a[2] * dz for a in axes]
        q = u[0] ** 2 * inv_r2[0] + u[1] ** 2 * inv_r2[1] + u[2] ** 2 * inv_r2[2]
        grad = 2.0 * np.sqrt(
            (u[0] * inv_r2[0]) ** 2 + (u[1] * inv_r2[1]) ** 2 + (u[2] * inv_r2[2]) ** 2
        )
        return (q - 1.0) / np.maximum(grad, 1e-6)

    return field


def ellipsoid_bounds(centre, axes, radii) -> tuple[np.ndarray, np.ndarray]:
    axes = np.asarray(axes, dtype=float)
    half = np.sqrt(((axes * np.asarray(radii, dtype=float)[:, None]) ** 2).sum(axis=0))
    centre = np.asarray(centre, dtype=float)
    return centre - half, centre + half


def capsule(p0, p1, r0: float, r1: float) -> Field:
    """Segment p0-p1 with a radius tapering linearly from r0 to r1 (a vessel piece)."""
    p0 = np.asarray(p0, dtype=np.float32)
    d = np.asarray(p1, dtype=np.float32) - p0
    length2 = float(d @ d) or 1e-6

    def field(x, y, z):
        rx, ry, rz = x - p0[0], y - p0[1], z - p0[2]
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / length2, 0.0, 1.0)
        dist = np.sqrt((rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2)
        return dist - (r0 + t * (r1 - r0))

    return field


def capsule_bounds(p0, p1, r: float) -> tuple[np.ndarray, np.ndarray]:
    p0, p1 = np.asarray(p0, dtype=float), np.asarray(p1, dtype=float)
    return np.minimum(p0, p1) - r, np.maximum(p0, p1) + r


def paint_tube(
    canvas: Canvas,
    path: np.ndarray,
    radii: np.ndarray,
    value: float | Field,
    label: int | None,
    **kwargs,
) -> None:
    """A tube along a polyline (N x 3 points) with a radius per point."""
    for a, b, ra, rb in zip(path[:-1], path[1:], radii[:-1], radii[1:], strict=True):
        low, high = capsule_bounds(a, b, max(ra, rb))
        canvas.paint(capsule(a, b, ra, rb), low, high, value, label, **kwargs)


def intersect(*fields: Field) -> Field:
    def field(x, y, z):
        out = fields[0](x, y, z)
        for other in fields[1:]:
            out = np.maximum(out, other(x, y, z))
        return out

    return field
