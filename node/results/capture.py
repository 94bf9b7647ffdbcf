"""A Secondary Capture with the score burned in, for PACS viewers that cannot show SEG or SR.

One RGB image: on the left the axial CT slice that carries the most decision feedback (or the
slice through the located heart centre when the score is 0), in a mediastinal window
(W400/L40), in radiological view (patient's right on the image's left, anterior up, true mm
aspect), with the feedback regions filled and outlined in one colour per artery; on the right
the total Agatston score, risk category, CAC-DRS, the per-artery scores, quality flags, the
model and the statement that this is an automated result and not a diagnosis. Burned In
Annotation is YES: the image carries text, so it must never be taken for a CT image.

Rendering uses matplotlib's object API with the Agg canvas (no pyplot and its global state,
so it is safe in a worker thread) and its bundled DejaVu fonts (same pixels on every machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from models.agatston import CATEGORY_NAMES, rounded_score
from models.calcium.result import CalciumResult
from models.labels import ARTERIES
from node.results.equipment import (
    algorithm_identity,
    equipment,
)
from node.results.regions import MIN_DENSITY_AU_PER_MM3, feedback_per_slice, feedback_regions
from node.results.seg import SEGMENT_RGB
from node.results.source import check_series, copy_patient_and_study, slice_indices

SC_SERIES_NUMBER = 9003
SERIES_DESCRIPTION = "ctnode calcium overlay - automated, not a diagnosis"
WINDOW_WIDTH_HU, WINDOW_LEVEL_HU = 400.0, 40.0
IMAGE_PX, PANEL_PX = 800, 480  # height = IMAGE_PX; the CT part is square, the text beside it
DPI = 100
FILL_ALPHA = 0.55
WARNING = "AUTOMATED RESULT - NOT A DIAGNOSIS"
ARTERY_LABELS = {"LAD": "LAD (+LM)", "LCX": "LCX", "RCA": "RCA"}


@dataclass(frozen=True)
class Overlay:
    """The rendered image and where it came from."""

    rgb: np.ndarray  # (rows, columns, 3) uint8
    slice_index: int  # volume slice shown (node.volume.read_ct's order)


def choose_slice(result: CalciumResult, ct: sitk.Image) -> int:
    """The slice with the most feedback; the slice through the heart centre (clamped to the
    scan) when the reported score is 0 or the map is empty."""
    per_slice = feedback_per_slice(result, ct)
    if rounded_score(result.agatston_total) > 0 and per_slice.max(initial=0.0) > 0:
        return int(np.argmax(per_slice))
    k = ct.TransformPhysicalPointToContinuousIndex([float(v) for v in result.heart_centre_mm])[2]
    return int(np.clip(round(k), 0, ct.GetSize()[2] - 1))


def render_overlay(
    ct: sitk.Image,
    result: CalciumResult,
    *,
    min_density_au_per_mm3: float = MIN_DENSITY_AU_PER_MM3,
) -> Overlay:
    """Render the overlay image (see the module docstring)."""
    k = choose_slice(result, ct)
    hu = sitk.GetArrayViewFromImage(ct)[k].astype(np.float32)
    regions = {a: m[k] for a, m in feedback_regions(result, ct, min_density_au_per_mm3).items()}
    hu, regions = _radiological(ct, hu, regions)
    rgb = _windowed(hu)
    for artery in ARTERIES:
        mask = regions[artery]
        colour = np.asarray(SEGMENT_RGB[artery], dtype=np.float32) / 255
        rgb[mask] = (1 - FILL_ALPHA) * rgb[mask] + FILL_ALPHA * colour

    figure = Figure(figsize=((IMAGE_PX + PANEL_PX) / DPI, IMAGE_PX / DPI), dpi=DPI)
    figure.patch.set_facecolor("black")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, IMAGE_PX / (IMAGE_PX + PANEL_PX), 1))
    axes.set_facecolor("black")
    axes.set_axis_off()
    spacing = ct.GetSpacing()
    extent = (0, hu.shape[1] * spacing[0], hu.shape[0] * spacing[1], 0)  # mm: true aspect
    axes.imshow(rgb, extent=extent, interpolation="nearest")
    # Pixel centres in mm, the coordinates imshow's extent gives the image.
    columns_mm = (np.arange(hu.shape[1]) + 0.5) * spacing[0]
    rows_mm = (np.arange(hu.shape[0]) + 0.5) * spacing[1]
    for artery in ARTERIES:
        if regions[artery].any():
            axes.contour(
                columns_mm,
                rows_mm,
                regions[artery].astype(np.float32),
                levels=[0.5],
                colors=[np.asarray(SEGMENT_RGB[artery]) / 255],
                linewidths=1.2,
            )
    _orientation_marks(axes)
    _panel(figure, result, k, ct)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return Overlay(rgb=image, slice_index=k)


def build_overlay_capture(
    source: Sequence[Dataset],
    ct: sitk.Image,
    result: CalciumResult,
    *,
    overlay: Overlay | None = None,
    series_number: int = SC_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sc.SCImage:
    """The overlay as a Secondary Capture Image in the source study, derived from the source
    instance it shows (Source Image Sequence)."""
    instances = check_series(source)
    overlay = overlay or render_overlay(ct, result)
    shown = instances[slice_indices(instances, ct).index(overlay.slice_index)]
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=shown,
        pixel_array=overlay.rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        **equipment(),
        series_description=SERIES_DESCRIPTION,
        # Radiological view: rows run to the patient's left, columns to the back.
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    copy_patient_and_study(capture, shown)
    # ctnode scores chest CT; a body part also settles General Series' condition on Laterality.
    capture.BodyPartExamined = shown.get("BodyPartExamined") or "CHEST"
    capture.ConversionType = "WSD"  # rendered by a workstation, not digitised
    capture.BurnedInAnnotation = "YES"
    capture.DerivationDescription = (
        f"Axial CT slice, W{WINDOW_WIDTH_HU:g}/L{WINDOW_LEVEL_HU:g}, with the coronary calcium "
        "decision-feedback regions and the automated score burned in"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = shown.SOPClassUID
    reference.ReferencedSOPInstanceUID = shown.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture


def save_png(image: np.ndarray | Dataset, path: Path) -> Path:
    """Write an overlay (an RGB array, or a Secondary Capture as built or as received) as PNG."""
    from PIL import Image  # Pillow comes with matplotlib

    rgb = image.pixel_array if isinstance(image, Dataset) else image
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit RGB image, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)
    return path


def _radiological(
    ct: sitk.Image, hu: np.ndarray, regions: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Flip a slice so that columns run to the patient's left and rows to the back."""
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    if abs(direction[0, 0]) < 0.5 or abs(direction[1, 1]) < 0.5:
        raise ValueError("overlay needs an axial scan with rows along x and columns along y")
    flips = []
    if direction[0, 0] < 0:  # columns run towards the patient's right (feet-first)
        flips.append(1)
    if direction[1, 1] < 0:  # rows run towards the front
        flips.append(0)
    if not flips:
        return hu, regions
    return np.flip(hu, flips), {a: np.flip(m, flips) for a, m in regions.items()}


def _windowed(hu: np.ndarray) -> np.ndarray:
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    grey = np.clip((hu - low) / WINDOW_WIDTH_HU, 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=2)


def _orientation_marks(axes) -> None:
    style = {"color": "white", "fontsize": 14, "fontweight": "bold", "transform": axes.transAxes}
    axes.text(0.01, 0.5, "R", ha="left", va="center", **style)
    axes.text(0.99, 0.5, "L", ha="right", va="center", **style)
    axes.text(0.5, 0.99, "A", ha="center", va="top", **style)
    axes.text(0.5, 0.01, "P", ha="center", va="bottom", **style)


def _panel(figure: Figure, result: CalciumResult, k: int, ct: sitk.Image) -> None:
    """The text beside the image."""
    x = (IMAGE_PX + 24) / (IMAGE_PX + PANEL_PX)
    line = 1 / 30
    y = 0.95

    def write(text: str, colour: str = "white", size: int = 15, weight: str = "normal") -> None:
        nonlocal y
        figure.text(
            x, y, text, color=colour, fontsize=size, fontweight=weight, family="DejaVu Sans Mono"
        )
        y -= line * size / 15

    name, model_version = algorithm_identity(result)
    z_mm = ct.TransformIndexToPhysicalPoint((0, 0, k))[2]
    write("ctnode", size=20, weight="bold")
    write("Coronary artery calcium")
    y -= line / 2
    write(WARNING, colour=to_rgb("#ff5050"), size=14, weight="bold")
    y -= line / 2
    write(f"Agatston score  {rounded_score(result.agatston_total):>6d}", size=18, weight="bold")
    write(f"Risk category   {CATEGORY_NAMES[result.category]:>6}")
    write(f"CAC-DRS         {result.cacdrs:>6}")
    y -= line / 2
    for artery in ARTERIES:
        value = rounded_score(result.agatston_per_artery.get(artery, 0.0))
        colour = tuple(c / 255 for c in SEGMENT_RGB[artery])
        write(f"{ARTERY_LABELS[artery]:<10}      {value:>6d}", colour=colour)
    y -= line / 2
    write("Quality flags:")
    for flag in result.flags or ["none"]:
        write(f"  {flag}", colour=to_rgb("#ffb000") if result.flags else "white", size=13)
    y -= line / 2
    write(f"Model {name} {model_version}", size=12)
    write(f"Axial slice at z {z_mm:.1f} mm", size=12)
    write(f"Window W{WINDOW_WIDTH_HU:g} / L{WINDOW_LEVEL_HU:g}", size=12)
    write("Coloured: voxels carrying the score", size=12)
    write("Not verified by a physician.", size=12)
