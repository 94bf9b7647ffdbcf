"""Side-by-side check of a phantom against a real non-contrast chest CT: montage and HU table.

python -m models.phantoms.compare --out models/phantoms/figures [--seed N] \
    --real ../shared/data/real/lung_pet_ct_dx_A0001/series_soft_kernel

The phantom: the first seed from --seed on whose case, generated at the real scan's protocol
(5 mm slices every 5 mm), has a soft kernel, the real scan's tube voltage (CT numbers of fat and
bone depend on kVp) and an Agatston category >= 3 (so lesions show). The generator is not tuned.

Region compared (the same craniocaudal region on both, about 100-130 mm):
* phantom: the z-extent of the HEART label (5);
* real scan: the heart as seen on the soft-kernel images, from the inferior wall over the liver
  dome to the aortic root (REAL_HEART_Z_MM, located by looking at the A0001 series; pass
  --real-heart-z for another scan).
The montage shows 4 slices per row at the centres of 4 equal bins of the region (cranial on
the left); in the phantom the bin nearest to the slice with most coronary-lesion voxels uses
that slice instead, and the real row uses the same fractions of its own region.

CT numbers are measured with the same threshold rules on both volumes, inside the region and
never from the phantom's labels (the real scan has none). In-plane operations are per slice
(2-D), because with 5 mm slices a 3-D neighbourhood mixes tissues along z:
* body: voxels > -500 HU, opened with a 3 mm disc (cuts the thin bridges to the table and to
  the blanket), largest 3-D connected component, holes filled slice by slice;
* lung: [-1024, -500] HU inside the filled body outline (air outside the patient is excluded
  by construction: it is not inside the outline);
* fat: [-200, -30] HU inside the body, eroded by 1 pixel (drops the one- to two-pixel
  partial-volume rims that every lung-soft-tissue edge leaves in this range);
* soft tissue: [-30, 100] HU inside the body, eroded by 2 pixels (pools muscle, blood,
  myocardium, liver and other organs);
* bone: >= 200 HU inside the body (cancellous and cortical bone with their partial volume);
* blood: discs of radius BLOOD_ROI_RADIUS_MM in the descending aorta. Phantom: the AORTA label
  (1) followed up from the lowest slice of the region, a disc at its deepest point on each
  slice while it has room for the disc plus 2 mm (see phantom_aorta_centres); the label only
  places the ROI, the HU inside it are what is measured. (A threshold rule cannot find it there: the
  phantom's aorta lies in mediastinal soft tissue of almost the same HU, with no fat or lung
  around it.) Real scan: a fixed cylinder (REAL_BLOOD_ROI_XY_MM over REAL_BLOOD_ROI_Z_MM) read
  off the image.
* noise: the standard deviation of HU inside the blood ROI (a uniform region) around each
  slice's ROI mean, pooled over slices; and, separately, the SD of the per-slice ROI means
  (slow slice-to-slice drift of the CT number, which pooled noise would hide).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after selecting the non-interactive backend
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from models.labels import Label  # noqa: E402
from models.phantoms.case import Case, CaseOptions, generate_case  # noqa: E402

PROTOCOL = (5.0, 5.0)  # thickness, increment (mm) of the real series
WINDOW = (40.0, 400.0)  # level, width: soft-tissue window for every panel
LESION_LABELS = tuple(int(v) for v in (40, 41, 42, 43))
CONFOUNDER_LABELS = tuple(int(v) for v in (50, 51, 52))

# Real scan (lung_pet_ct_dx_A0001, series_soft_kernel), located by looking at the images:
# the heart's inferior wall first shows above the liver dome at z = -369 mm; z = -274 mm is the
# level of the aortic root and left atrium, above it only the great vessels remain.
REAL_HEART_Z_MM = (-369.0, -274.0)
# Blood ROI: a fixed cylinder in the descending aorta, left-anterior of the vertebral body, over
# the middle 35 mm of the region. The lumen (radius ~13 mm) is centred at (2.6, 191.8) mm at
# z = -334 mm and within 3.2 mm of it from z = -349 to -319 mm (read off the images).
REAL_BLOOD_ROI_XY_MM = (2.6, 191.8)  # x, y (DICOM patient coordinates, LPS)
REAL_BLOOD_ROI_Z_MM = (-349.0, -319.0)
BLOOD_ROI_RADIUS_MM = 6.0  # leaves >= 4 mm to the wall in both (phantom aorta radius 10-14)

TISSUE_RULES = {
    "lung": "[-1024, -500] HU inside the filled body outline",
    "fat": "[-200, -30] HU inside the body, eroded 1 px in-plane",
    "soft tissue": "[-30, 100] HU inside the body, eroded 2 px in-plane",
    "blood": f"{BLOOD_ROI_RADIUS_MM:g} mm radius discs in the descending aorta (see module doc)",
    "bone": ">= 200 HU inside the body",
}
NOISE_RULE = "SD of HU in the blood ROI around each slice's ROI mean (pooled)"
DRIFT_RULE = "SD of the blood ROI's per-slice means"


@dataclass
class Volume:
    """An axial CT volume with the world coordinate of every column, row and slice (mm)."""

    hu: np.ndarray  # float32 (slice, row, column)
    x: np.ndarray  # world x of each column
    y: np.ndarray  # world y of each row
    z: np.ndarray  # world z of each slice
    labels: np.ndarray | None = None  # phantom only

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return float(abs(self.x[1] - self.x[0])), float(abs(self.y[1] - self.y[0]))

    def z_slab(self, low: float, high: float) -> Volume:
        """The slices whose z lies within [low, high] (in their stored order)."""
        keep = np.flatnonzero((self.z >= low - 1e-3) & (self.z <= high + 1e-3))
        if keep.size == 0:
            raise ValueError(f"no slice within z [{low}, {high}] mm")
        cut = slice(int(keep[0]), int(keep[-1]) + 1)
        labels = None if self.labels is None else self.labels[cut]
        return Volume(self.hu[cut], self.x, self.y, self.z[cut], labels)


def volume_from_image(image: sitk.Image) -> Volume:
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(np.abs(direction), np.eye(3), atol=1e-4):
        raise ValueError("only axial, untilted series are supported")
    origin, spacing = np.asarray(image.GetOrigin()), np.asarray(image.GetSpacing())
    size = image.GetSize()
    axes = [origin[a] + direction[a, a] * spacing[a] * np.arange(size[a]) for a in range(3)]
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    return Volume(hu, axes[0], axes[1], axes[2])


def volume_from_case(case: Case) -> Volume:
    grid = case.grid
    return Volume(case.image.astype(np.float32), grid.x(), grid.y(), grid.z(), case.labels)


def read_series(folder: Path) -> tuple[sitk.Image, dict[str, str]]:
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise FileNotFoundError(f"no DICOM series in {folder}")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    tags = {"kvp": "0018|0060", "kernel": "0018|1210", "manufacturer": "0008|0070"}
    meta = {
        k: reader.GetMetaData(0, t).strip() if reader.HasMetaDataKey(0, t) else ""
        for k, t in tags.items()
    }
    return image, meta


# --- CT numbers by threshold rules ---------------------------------------------------------


def _disc(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px**2


def _per_slice(op, mask: np.ndarray, **kwargs) -> np.ndarray:
    return np.stack([op(m, **kwargs) for m in mask])


def body_mask(hu: np.ndarray, pixel_mm: float = 1.0) -> np.ndarray:
    """Voxels > -500 HU, opened in-plane with a 3 mm disc, largest 3-D component, holes
    filled slice by slice (the filled outline includes the lungs)."""
    dense = hu > -500
    radius = max(1, int(round(3.0 / pixel_mm)))
    dense = _per_slice(ndi.binary_opening, dense, structure=_disc(radius))
    components, n = ndi.label(dense)
    if n == 0:
        return dense
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    return _per_slice(ndi.binary_fill_holes, largest)


def tissue_masks(hu: np.ndarray, pixel_mm: float = 1.0) -> dict[str, np.ndarray]:
    """Lung, fat, soft tissue and bone masks by the module's threshold rules."""
    body = body_mask(hu, pixel_mm)

    def eroded(mask: np.ndarray, pixels: int) -> np.ndarray:
        return _per_slice(ndi.binary_erosion, mask, structure=np.ones((3, 3)), iterations=pixels)

    return {
        "lung": body & (hu >= -1024) & (hu <= -500),
        "fat": eroded(body & (hu >= -200) & (hu < -30), 1),
        "soft tissue": eroded(body & (hu >= -30) & (hu <= 100), 2),
        "bone": body & (hu >= 200),
    }


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"median": None, "p25": None, "p75": None, "n": 0}
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "p25": float(p25), "p75": float(p75), "n": int(values.size)}


def measure_hu(hu: np.ndarray, blood_roi: np.ndarray, pixel_mm: float = 1.0) -> dict:
    """Median (and quartiles, count) of each tissue's HU by the threshold rules; blood from
    `blood_roi` (a boolean mask of hu's shape), with the noise SD within slices (pooled around
    each slice's ROI mean) and the SD of the per-slice ROI means (slice-to-slice drift)."""
    hu = np.asarray(hu, dtype=np.float32)
    masks = tissue_masks(hu, pixel_mm)
    out = {name: _stats(hu[mask]) for name, mask in masks.items()}
    out["blood"] = _stats(hu[blood_roi])
    per_slice = [hu[k][blood_roi[k]] for k in range(hu.shape[0]) if blood_roi[k].any()]
    residuals = np.concatenate([v - v.mean() for v in per_slice]) if per_slice else np.empty(0)
    dof = residuals.size - len(per_slice)
    out["noise_sd"] = float(np.sqrt((residuals**2).sum() / dof)) if dof > 0 else None
    means = [float(v.mean()) for v in per_slice]
    out["blood_slice_means"] = [round(m, 1) for m in means]
    out["slice_to_slice_sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else None
    return out


def roi_mask(
    vol: Volume, centres: dict[int, tuple[float, float, float]], radius_mm: float
) -> np.ndarray:
    """Boolean mask: a disc of radius_mm around each slice's centre."""
    mask = np.zeros(vol.hu.shape, dtype=bool)
    for k, (cx, cy, _) in centres.items():
        mask[k] = ((vol.x[None, :] - cx) ** 2 + (vol.y[:, None] - cy) ** 2) <= radius_mm**2
    return mask


def phantom_aorta_centres(vol: Volume) -> dict[int, tuple[float, float, float]]:
    """Blood ROI centres of the phantom: the descending aorta, followed from the lowest slice of
    the region up. On the lowest slice with an AORTA label (1) only the descending aorta is
    there (the aortic root sits at the heart's base, on top); each next slice takes the
    label's component under the previous centre. The centre is the component's deepest point,
    accepted while a disc of BLOOD_ROI_RADIUS_MM + 2 mm fits inside it: following stops where
    the phantom's heart covers the aorta."""
    assert vol.labels is not None
    sx, sy = vol.pixel_mm
    centres: dict[int, tuple[float, float, float]] = {}
    previous: tuple[int, int] | None = None
    for k in np.argsort(vol.z, kind="stable"):
        components, n = ndi.label(vol.labels[k] == Label.AORTA)
        if n == 0:
            if previous is None:
                continue
            break
        if previous is None:
            sizes = np.bincount(components.ravel())[1:]
            chosen = 1 + int(np.argmax(sizes))
        else:
            chosen = int(components[previous])
            if chosen == 0:
                break
        depth = ndi.distance_transform_edt(components == chosen, sampling=(sy, sx))
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if depth[row, col] < BLOOD_ROI_RADIUS_MM + 2.0:
            break
        previous = (int(row), int(col))
        centres[int(k)] = (float(vol.x[col]), float(vol.y[row]), float(vol.z[k]))
    if not centres:
        raise ValueError("the descending aorta is nowhere wide enough for the blood ROI")
    return dict(sorted(centres.items()))


def fixed_centres(
    vol: Volume, centre_xy: tuple[float, float], z_range: tuple[float, float]
) -> dict[int, tuple[float, float, float]]:
    """The same ROI centre on every slice within z_range (a fixed cylinder)."""
    ks = np.flatnonzero((vol.z >= min(z_range) - 1e-3) & (vol.z <= max(z_range) + 1e-3))
    return {int(k): (centre_xy[0], centre_xy[1], float(vol.z[k])) for k in ks}


# --- phantom choice -------------------------------------------------------------------------


def pick_case(seed: int, kvp: float | None, category: int = 3, tries: int = 200) -> Case:
    for s in range(seed, seed + tries):
        case = generate_case(s, category, CaseOptions(matrix=512, protocol=PROTOCOL))
        acq = case.acquisition
        fits = not acq.sharp_kernel and case.truth.category >= 3
        if kvp is not None:
            fits &= abs(acq.kvp - kvp) < 1
        if fits:
            return case
    raise RuntimeError(f"no fitting phantom in seeds {seed}..{seed + tries - 1}")


def heart_z_range(vol: Volume) -> tuple[float, float]:
    z = vol.z[(vol.labels == Label.HEART).any(axis=(1, 2))]
    return float(z.min()), float(z.max())


# --- montage --------------------------------------------------------------------------------


def display(vol: Volume, k: int, image: np.ndarray | None = None):
    """A slice in radiological convention (patient right on the image left, anterior up) and
    its imshow extent in mm; x then grows to the right and y downwards."""
    plane = vol.hu[k] if image is None else image
    x, y = vol.x, vol.y
    if x[-1] < x[0]:
        plane, x = plane[:, ::-1], x[::-1]
    if y[-1] < y[0]:
        plane, y = plane[::-1], y[::-1]
    sx, sy = vol.pixel_mm
    extent = (x[0] - sx / 2, x[-1] + sx / 2, y[-1] + sy / 2, y[0] - sy / 2)
    return plane, x, y, extent


def slice_fractions(vol: Volume, z_range: tuple[float, float], n: int = 4) -> list[int]:
    """Indices of the slices nearest to the centres of n equal bins of z_range."""
    lo, hi = z_range
    targets = lo + (np.arange(n) + 0.5) / n * (hi - lo)
    return [int(np.argmin(np.abs(vol.z - t))) for t in targets]


def phantom_slices(vol: Volume, z_range: tuple[float, float]) -> list[int]:
    ks = slice_fractions(vol, z_range)
    lesions = np.isin(vol.labels, LESION_LABELS).sum(axis=(1, 2))
    if lesions.max() > 0:
        best = int(np.argmax(lesions))
        if best not in ks:
            ks[int(np.argmin([abs(vol.z[k] - vol.z[best]) for k in ks]))] = best
    return sorted(set(ks), key=lambda k: -vol.z[k])  # cranial first


def body_box(vol: Volume, ks: list[int]) -> tuple[float, float, float, float]:
    """World bounding box (x0, x1, y0, y1) of the body on the given slices."""
    body = body_mask(vol.hu[ks], vol.pixel_mm[0]).any(axis=0)
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    xs, ys = vol.x[[cols[0], cols[-1]]], vol.y[[rows[0], rows[-1]]]
    return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())


def montage(
    phantom: Volume,
    p_slices: list[int],
    real: Volume,
    r_slices: list[int],
    rois: tuple[dict, dict],
    titles: tuple[str, str],
    out: Path,
    credit: str = "",
) -> None:
    level, width = WINDOW
    boxes = [body_box(phantom, p_slices), body_box(real, r_slices)]
    half_w = max(b[1] - b[0] for b in boxes) / 2 + 12
    half_h = max(b[3] - b[2] for b in boxes) / 2 + 12
    # Manual layout (inches): true mm aspect in every panel, a caption line above each row.
    fig_w, margin, gap, header, caption = 16.0, 0.1, 0.08, 0.75, 0.55
    panel_w = (fig_w - 2 * margin - 3 * gap) / 4
    panel_h = panel_w * half_h / half_w
    fig_h = header + 2 * (caption + panel_h) + 0.3
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    axes = np.empty((2, 4), dtype=object)
    for r in range(2):
        top = fig_h - header - r * (caption + panel_h) - caption
        fig.text(0.5, (top + 0.3) / fig_h, titles[r], ha="center", va="bottom", fontsize=11.5)
        for c in range(4):
            left = margin + c * (panel_w + gap)
            axes[r, c] = fig.add_axes(
                (left / fig_w, (top - panel_h) / fig_h, panel_w / fig_w, panel_h / fig_h)
            )
    rows = ((phantom, p_slices, boxes[0], rois[0]), (real, r_slices, boxes[1], rois[1]))
    for r, (vol, ks, box, roi) in enumerate(rows):
        cx, cy = 0.5 * (box[0] + box[1]), 0.5 * (box[2] + box[3])
        for c, k in enumerate(ks):
            ax = axes[r, c]
            ax.set_facecolor("black")  # outside a small reconstruction field
            plane, x, y, extent = display(vol, k)
            ax.imshow(
                plane,
                cmap="gray",
                vmin=level - width / 2,
                vmax=level + width / 2,
                extent=extent,
                interpolation="nearest",
            )
            if vol.labels is not None:
                for labels, colour in ((LESION_LABELS, "red"), (CONFOUNDER_LABELS, "yellow")):
                    mask = display(vol, k, np.isin(vol.labels[k], labels).astype(float))[0]
                    if not mask.any():
                        continue
                    ax.contour(x, y, mask, levels=[0.5], colors=colour, linewidths=1.0)
                    # Calcifications are a few pixels across: ring each one so it can be found.
                    components, n = ndi.label(mask > 0.5)
                    for row, col in ndi.center_of_mass(mask, components, range(1, n + 1)):
                        centre = (
                            np.interp(col, np.arange(x.size), x),
                            np.interp(row, np.arange(y.size), y),
                        )
                        ax.add_patch(Circle(centre, 7.0, fill=False, color=colour, lw=0.8, ls=":"))
            if k in roi:
                ax.add_patch(
                    Circle(roi[k][:2], BLOOD_ROI_RADIUS_MM, fill=False, color="cyan", lw=1.0)
                )
            ax.set_xlim(cx - half_w, cx + half_w)
            ax.set_ylim(cy + half_h, cy - half_h)
            ax.set_title(f"z = {vol.z[k]:.1f} mm", fontsize=10.5, pad=3)
            ax.set_xticks([])
            ax.set_yticks([])
            for side, text in ((0.015, "R"), (0.955, "L")):
                ax.text(side, 0.02, text, color="w", transform=ax.transAxes, fontsize=9)
    fig.suptitle(
        f"Soft-tissue window W {width:g} / L {level:g}, radiological view (patient right on the "
        "left, anterior up), same mm scale in all panels.\nRed: coronary calcium (labels 40-43), "
        "yellow: confounder calcifications (50-52), dotted rings mark them; cyan: blood ROI",
        fontsize=11,
        y=1 - 0.08 / fig_h,
        va="top",
    )
    fig.text(1 - margin / fig_w, 0.06 / fig_h, credit, ha="right", fontsize=8, color="0.3")
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --- table ----------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _zs(centres: dict) -> str:
    zs = [c[2] for c in centres.values()]
    return f"{min(zs):.0f}..{max(zs):.0f}"


def table_markdown(phantom: dict, real: dict) -> str:
    lines = [
        "| tissue | phantom median HU | real median HU | rule |",
        "|---|---:|---:|---|",
    ]
    for name, rule in TISSUE_RULES.items():
        lines.append(
            f"| {name} | {_fmt(phantom[name]['median'])} | {_fmt(real[name]['median'])} | {rule} |"
        )
    for name, key, rule in (
        ("noise SD", "noise_sd", NOISE_RULE),
        ("slice-to-slice SD", "slice_to_slice_sd", DRIFT_RULE),
    ):
        p, r = phantom[key], real[key]
        lines.append(
            f"| {name} | {'n/a' if p is None else f'{p:.1f}'} | "
            f"{'n/a' if r is None else f'{r:.1f}'} | {rule} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.phantoms.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--real", type=Path, required=True, help="real soft-kernel CT series")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figure and table")
    parser.add_argument("--seed", type=int, default=0, help="first phantom seed tried")
    parser.add_argument(
        "--real-heart-z",
        type=float,
        nargs=2,
        default=REAL_HEART_Z_MM,
        metavar=("LOW", "HIGH"),
        help="heart z-range of the real scan (mm); default: A0001's",
    )
    parser.add_argument(
        "--real-blood-roi-xy",
        type=float,
        nargs=2,
        default=REAL_BLOOD_ROI_XY_MM,
        metavar=("X", "Y"),
        help="centre of the real scan's blood ROI (mm, LPS); default: A0001's descending aorta",
    )
    parser.add_argument(
        "--real-blood-roi-z",
        type=float,
        nargs=2,
        default=REAL_BLOOD_ROI_Z_MM,
        metavar=("LOW", "HIGH"),
        help="z-range of the real scan's blood ROI (mm); default: A0001's",
    )
    args = parser.parse_args(argv)

    image, meta = read_series(args.real)
    real_kvp = float(meta["kvp"]) if meta.get("kvp") else None
    case = pick_case(args.seed, real_kvp)
    acq = case.acquisition
    print(
        f"phantom seed {case.seed}: kernel {acq.kernel} ({acq.manufacturer}), {acq.kvp:g} kVp, "
        f"{acq.patient_position}, noise SD {acq.noise_sd_hu:.1f} HU, "
        f"Agatston {case.truth.total:.0f} (category {case.truth.category})"
    )

    phantom_full = volume_from_case(case)
    p_range = heart_z_range(phantom_full)
    r_range = tuple(sorted(args.real_heart_z))
    phantom = phantom_full.z_slab(*p_range)
    real = volume_from_image(image).z_slab(*r_range)

    p_roi = phantom_aorta_centres(phantom)
    r_roi = fixed_centres(real, tuple(args.real_blood_roi_xy), tuple(args.real_blood_roi_z))
    p_hu = measure_hu(
        phantom.hu, roi_mask(phantom, p_roi, BLOOD_ROI_RADIUS_MM), phantom.pixel_mm[0]
    )
    r_hu = measure_hu(real.hu, roi_mask(real, r_roi, BLOOD_ROI_RADIUS_MM), real.pixel_mm[0])

    p_slices = phantom_slices(phantom, p_range)
    fractions = [(phantom.z[k] - p_range[0]) / (p_range[1] - p_range[0]) for k in p_slices]
    r_slices = [
        int(np.argmin(np.abs(real.z - (r_range[0] + f * (r_range[1] - r_range[0])))))
        for f in fractions
    ]

    args.out.mkdir(parents=True, exist_ok=True)
    titles = (
        f"Phantom, seed {case.seed}: {acq.manufacturer} kernel {acq.kernel}, {acq.kvp:g} kVp, "
        f"5 mm, {acq.pixel_spacing_mm:.2f} mm pixels, {acq.patient_position}; Agatston "
        f"{case.truth.total:.0f} (category {case.truth.category}); heart (HEART label) z "
        f"{p_range[0]:.0f} to {p_range[1]:.0f} mm",
        f"Real {args.real.parent.name}/{args.real.name}: {meta.get('manufacturer') or '?'} "
        f"kernel {meta.get('kernel') or '?'}, {real_kvp or 0:g} kVp, 5 mm, "
        f"{real.pixel_mm[0]:.2f} mm pixels; heart (by inspection) z {r_range[0]:.0f} to "
        f"{r_range[1]:.0f} mm; slices at the same fractions of the heart's height",
    )
    credit = (
        "Real images: Lung-PET-CT-Dx (Li P et al., 2020), The Cancer Imaging Archive, "
        "doi:10.7937/TCIA.2020.NNC20461, CC BY 4.0"
    )
    montage(
        phantom,
        p_slices,
        real,
        r_slices,
        (p_roi, r_roi),
        titles,
        args.out / "montage.png",
        credit,
    )

    table = table_markdown(p_hu, r_hu)
    header = (
        f"# Phantom (seed {case.seed}) vs real soft-kernel chest CT ({args.real.parent.name})\n\n"
        f"Measured by `python -m models.phantoms.compare` with the same threshold rules on "
        f"both, within the heart region only (phantom z {p_range[0]:.0f}..{p_range[1]:.0f} mm, "
        f"real z {r_range[0]:.0f}..{r_range[1]:.0f} mm). Blood ROI "
        f"({BLOOD_ROI_RADIUS_MM:g} mm discs, descending aorta): phantom on {len(p_roi)} slices "
        f"(z {_zs(p_roi)} mm, placed from the AORTA label), per-slice means "
        f"{p_hu['blood_slice_means']} HU; real on {len(r_roi)} slices (z {_zs(r_roi)} mm, "
        f"fixed x, y = {tuple(args.real_blood_roi_xy)} mm), per-slice means "
        f"{r_hu['blood_slice_means']} HU. Module docstring: the rules in full.\n\n"
        "Real data: Li P et al. (2020), A Large-Scale CT and PET/CT Dataset for Lung Cancer "
        "Diagnosis, The Cancer Imaging Archive, https://doi.org/10.7937/TCIA.2020.NNC20461 "
        "(CC BY 4.0).\n\n"
    )
    (args.out / "hu_table.md").write_text(header + table)
    report = {
        "seed": case.seed,
        "phantom_acquisition": {
            k: acq.to_dict()[k]
            for k in ("manufacturer", "kernel", "kvp", "noise_sd_hu", "patient_position")
        }
        | {"pixel_spacing_mm": round(acq.pixel_spacing_mm, 3)},
        "phantom_agatston": {"total": round(case.truth.total, 1), "category": case.truth.category},
        "real_series": str(args.real),
        "real_meta": meta,
        "z_range_mm": {"phantom": list(p_range), "real": list(r_range)},
        "blood_roi_mm": {
            "radius": BLOOD_ROI_RADIUS_MM,
            "phantom_centres": [[round(v, 2) for v in c] for c in p_roi.values()],
            "real_centres": [[round(v, 2) for v in c] for c in r_roi.values()],
        },
        "montage_slices_z_mm": {
            "phantom": [float(phantom.z[k]) for k in p_slices],
            "real": [float(real.z[k]) for k in r_slices],
        },
        "rules": TISSUE_RULES | {"noise_sd": NOISE_RULE, "slice_to_slice_sd": DRIFT_RULE},
        "phantom": p_hu,
        "real": r_hu,
    }
    (args.out / "hu_table.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
