"""Stack -> SimpleITK image in HU (int16) with the geometry that `plan_geometry` worked out.

The output array is allocated once at its final size and filled slice by slice, so memory
stays near twice the volume (the array plus SimpleITK's copy of it) however long the series:
input slices are read one at a time, and only the two that bracket an output slice are held
while resampling (gantry tilt, variable spacing, filled holes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from node.volume.geometry import AssemblyError, StackGeometry, plan_geometry
from node.volume.pixels import AIR_HU, PixelDataError, read_stored, to_hu
from node.volume.stacks import Stack

__all__ = ["AssembledStack", "AssemblyError", "assemble"]


@dataclass
class AssembledStack:
    # int16 HU, LPS geometry; metadata "0018|0050" = slice thickness and, where the header
    # has them, "0018|0010" / "0018|1040" = Contrast/Bolus Agent / Route (the contrast gate)
    image: sitk.Image
    geometry: StackGeometry
    notes: list[str] = field(default_factory=list)


def assemble(stack: Stack, missing_slices: str = "refuse") -> AssembledStack:
    """Read, convert and (where needed) resample one stack; AssemblyError says why not."""
    geometry = plan_geometry(stack, missing_slices)
    volume = np.empty((geometry.n_slices, geometry.n_rows, geometry.n_columns), np.int16)
    try:
        if geometry.resampled:
            _fill_resampled(volume, geometry)
        else:
            for index, frame in enumerate(geometry.frames):
                to_hu(read_stored(frame), frame, out=volume[index])
    except PixelDataError as error:
        raise AssemblyError(str(error)) from error
    image = sitk.GetImageFromArray(volume)
    del volume  # SimpleITK holds its own copy now
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    if stack.thickness is not None:
        image.SetMetaData("0018|0050", f"{stack.thickness:g}")
    for key, value in (
        ("0018|0010", stack.first.contrast_agent),
        ("0018|1040", stack.first.contrast_route),
    ):
        if value:
            image.SetMetaData(key, value)
    return AssembledStack(image, geometry, list(geometry.notes))


def _fill_resampled(volume: np.ndarray, geometry: StackGeometry) -> None:
    """Each output slice from the two input slices around it (linear along the normal), each
    first shifted along the column direction by its own tilt displacement (linear in-plane)."""
    distances = geometry.distances
    cache: dict[int, np.ndarray] = {}
    for index, z in enumerate(geometry.output_distances):
        upper = int(np.searchsorted(distances, z - 1e-6))
        upper = min(max(upper, 1), len(distances) - 1)
        lower = upper - 1
        weight = (z - distances[lower]) / (distances[upper] - distances[lower])
        weight = float(np.clip(weight, 0.0, 1.0))
        for key in [k for k in cache if k < lower]:
            del cache[key]  # only the bracketing pair is ever held
        for key in (lower, upper):
            if key not in cache:
                cache[key] = _desheared(key, geometry)
        blended = (1.0 - weight) * cache[lower] + weight * cache[upper]
        volume[index] = np.rint(blended).astype(np.int16)


def _desheared(index: int, geometry: StackGeometry) -> np.ndarray:
    """Input slice `index` in HU on the output rows (float32), air where it has no data."""
    frame = geometry.frames[index]
    hu = to_hu(read_stored(frame), frame).astype(np.float32)
    rows_in = hu.shape[0]
    source = np.arange(geometry.n_rows) + geometry.first_row - geometry.shifts[index]
    out = np.full((geometry.n_rows, hu.shape[1]), AIR_HU, np.float32)
    inside = (source > -1e-3) & (source < rows_in)
    src = np.clip(source[inside], 0.0, rows_in - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, rows_in - 1)
    fraction = (src - low)[:, None].astype(np.float32)
    out[inside] = (1.0 - fraction) * hu[low] + fraction * hu[high]
    return out
