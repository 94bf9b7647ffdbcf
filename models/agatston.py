"""Reference Agatston calculator: the one definition of the score used everywhere in ctnode.

Definition (REFERENCE.md section 2; Agatston 1990 as used for chest CT by the Utrecht group):

* Candidate voxels: HU >= 130 inside a coronary-calcium label (LM, LAD, LCX, RCA).
* Per axial slice and per artery, 2-D connected components with 8-connectivity. A component
  whose area is smaller than 1.0 mm^2 is dropped.
* Density weight from the component's peak HU: 130-199 -> 1, 200-299 -> 2, 300-399 -> 3,
  >= 400 -> 4. Component score = area (mm^2) x weight.
* Total = sum of component scores x (slice increment / 3 mm). Per artery: LAD (left main
  counted as LAD), LCX, RCA.
* Volume score = number of counted voxels x voxel volume (pixel area x slice increment).
* Mass score (optional) = calibration factor (mg/cm^3 per HU) x sum over counted voxels of
  HU x voxel volume (cm^3).

Array order is (z, y, x), slices along the first axis, as SimpleITK's GetArrayFromImage gives.
Risk categories are taken on the score rounded to the nearest integer (half up), because scores
are reported as integers and a category must not depend on a fraction of a unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix, csgraph

from models.labels import ARTERIES, CAC_LABEL_TO_ARTERY

CALCIUM_THRESHOLD_HU = 130
MIN_COMPONENT_AREA_MM2 = 1.0
REFERENCE_SLICE_MM = 3.0
# Float tolerance on the area test, so that e.g. 4 pixels of 0.5 x 0.5 mm (= 1.0 mm^2) count.
_AREA_EPS = 1e-9

CATEGORY_NAMES = ("0", "1-10", "11-100", "101-400", ">400")


def density_weight(peak_hu: np.ndarray | float) -> np.ndarray:
    """Agatston density weight (1-4) from a peak HU that is at least 130."""
    peak = np.asarray(peak_hu)
    return 1 + (peak >= 200).astype(np.int64) + (peak >= 300) + (peak >= 400)


def rounded_score(score: float) -> int:
    """Score as reported: nearest integer, halves rounded up."""
    return int(math.floor(score + 0.5))


def risk_category(score: float) -> int:
    """Five-class category: 0 -> 0, 1-10 -> 1, 11-100 -> 2, 101-400 -> 3, >400 -> 4."""
    s = rounded_score(score)
    if s <= 0:
        return 0
    if s <= 10:
        return 1
    if s <= 100:
        return 2
    if s <= 400:
        return 3
    return 4


def cac_drs(score: float) -> str:
    """CAC-DRS Agatston class: A0 (0), A1 (1-99), A2 (100-299), A3 (>= 300)."""
    s = rounded_score(score)
    if s <= 0:
        return "A0"
    if s < 100:
        return "A1"
    if s < 300:
        return "A2"
    return "A3"


@dataclass(frozen=True)
class Lesion:
    """One calcified lesion: a 3-D connected group of counted voxels of one artery."""

    artery: str
    first_slice: int
    last_slice: int
    area_mm2: float  # summed over the slices it spans
    peak_hu: float
    score: float  # Agatston contribution, slice-increment normalised
    volume_mm3: float
    centroid_zyx: tuple[float, float, float]  # voxel indices


@dataclass(frozen=True)
class AgatstonResult:
    total: float
    per_artery: dict[str, float]
    volume_mm3: float
    volume_per_artery_mm3: dict[str, float]
    lesions: list[Lesion] = field(default_factory=list)
    mass_mg: float | None = None

    @property
    def category(self) -> int:
        return risk_category(self.total)

    @property
    def cacdrs(self) -> str:
        return cac_drs(self.total)

    def to_dict(self) -> dict:
        return {
            "agatston_total": self.total,
            "agatston_per_artery": dict(self.per_artery),
            "volume_mm3": self.volume_mm3,
            "volume_per_artery_mm3": dict(self.volume_per_artery_mm3),
            "mass_mg": self.mass_mg,
            "category": self.category,
            "category_name": CATEGORY_NAMES[self.category],
            "cacdrs": self.cacdrs,
            "lesions": [asdict(lesion) for lesion in self.lesions],
        }


def _artery_lookup(labels: np.ndarray, artery_of_label: Mapping[int, str]) -> np.ndarray:
    """Map label values to artery indices 1..3 (0 = not a coronary calcium label)."""
    top = max(int(labels.max(initial=0)), max(artery_of_label, default=0))
    lut = np.zeros(top + 1, dtype=np.uint8)
    for value, artery in artery_of_label.items():
        lut[value] = ARTERIES.index(artery) + 1
    return lut


def agatston(
    hu: np.ndarray,
    labels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    *,
    calibration_mg_per_cm3_per_hu: float | None = None,
    artery_of_label: Mapping[int, str] = CAC_LABEL_TO_ARTERY,
) -> AgatstonResult:
    """Agatston score of `hu` restricted to the coronary-calcium voxels of `labels`.

    spacing_zyx: (slice increment, row spacing, column spacing) in mm. The slice increment
    (distance between slice positions, not the nominal thickness) drives the normalisation
    to 3 mm slices and the voxel volume, as in the classic overlapping-reconstruction practice.
    """
    if hu.shape != labels.shape or hu.ndim != 3:
        raise ValueError(f"hu {hu.shape} and labels {labels.shape} must be the same 3-D shape")
    increment, row_mm, col_mm = (float(s) for s in spacing_zyx)
    if min(increment, row_mm, col_mm) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing_zyx}")
    pixel_area = row_mm * col_mm
    voxel_volume = pixel_area * increment
    normalisation = increment / REFERENCE_SLICE_MM

    per_artery = dict.fromkeys(ARTERIES, 0.0)
    volume_per_artery = dict.fromkeys(ARTERIES, 0.0)
    lesions: list[Lesion] = []
    weighted_hu_sum = 0.0

    # Crop to the calcium candidates first: everything below runs on a few thousand voxels.
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
        raise ValueError("labels must hold non-negative integer label values")
    lut = _artery_lookup(labels, artery_of_label)
    # Work on the flat list of calcium candidates (a few thousand voxels), never on the volume.
    where = np.flatnonzero(hu >= CALCIUM_THRESHOLD_HU)
    artery_of_candidate = lut[labels.ravel()[where]]
    for index, artery in enumerate(ARTERIES, start=1):
        mine = where[artery_of_candidate == index]
        if mine.size == 0:
            continue
        zyx = np.stack(np.unravel_index(mine, hu.shape))
        artery_lesions, counted_hu_sum = _score_artery(
            zyx,
            hu.ravel()[mine].astype(np.float64),
            artery,
            pixel_area,
            voxel_volume,
            normalisation,
        )
        lesions.extend(artery_lesions)
        per_artery[artery] = float(sum(lesion.score for lesion in artery_lesions))
        volume_per_artery[artery] = float(sum(lesion.volume_mm3 for lesion in artery_lesions))
        weighted_hu_sum += counted_hu_sum

    lesions.sort(key=lambda lesion: (lesion.first_slice, lesion.artery, -lesion.score))
    mass = None
    if calibration_mg_per_cm3_per_hu is not None:
        mass = calibration_mg_per_cm3_per_hu * weighted_hu_sum * voxel_volume / 1000.0
    return AgatstonResult(
        total=float(sum(per_artery.values())),
        per_artery=per_artery,
        volume_mm3=float(sum(volume_per_artery.values())),
        volume_per_artery_mm3=volume_per_artery,
        lesions=lesions,
        mass_mg=mass,
    )


# Half of each neighbourhood (the other half is the same edges reversed), as (dz, dy, dx).
_IN_PLANE_8 = ((0, 0, 1), (0, 1, -1), (0, 1, 0), (0, 1, 1))
_FULL_26 = tuple(
    (dz, dy, dx)
    for dz in (-1, 0, 1)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dz, dy, dx) > (0, 0, 0)
)


def connected_components(zyx: np.ndarray, offsets: tuple[tuple[int, int, int], ...]):
    """Connected components of a sparse voxel set given as a (3, N) array of indices.

    Two voxels are connected when their index difference is one of `offsets` (or its
    negative). Returns (component id per voxel, 0-based, and the number of components).
    Sorting plus binary search keeps this O(N log N) in the number of voxels, whatever
    the size of the volume they sit in.
    """
    n = zyx.shape[1]
    base = zyx.min(axis=1) - 1
    extent = zyx.max(axis=1) - base + 2  # one empty voxel on every side: no wrap-around
    local = zyx - base[:, None]
    key = (local[0] * extent[1] + local[1]) * extent[2] + local[2]
    order = np.argsort(key)
    sorted_key = key[order]
    sources, targets = [], []
    for dz, dy, dx in offsets:
        wanted = key + (dz * extent[1] + dy) * extent[2] + dx
        pos = np.minimum(np.searchsorted(sorted_key, wanted), n - 1)
        hit = sorted_key[pos] == wanted
        sources.append(np.flatnonzero(hit))
        targets.append(order[pos[hit]])
    src, dst = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    count, component = csgraph.connected_components(graph, directed=False)
    return component, count


def _slice_components(zyx: np.ndarray, value: np.ndarray, pixel_area: float):
    """2-D components of candidate voxels: (component per voxel, count, area in mm^2,
    kept by the minimum-area rule, peak HU), the last three per component."""
    component, n_components = connected_components(zyx, _IN_PLANE_8)
    area = np.bincount(component, minlength=n_components) * pixel_area
    kept = area >= MIN_COMPONENT_AREA_MM2 - _AREA_EPS
    peak = np.full(n_components, -np.inf)
    np.maximum.at(peak, component, value)
    return component, n_components, area, kept, peak


def voxel_contributions(
    hu: np.ndarray,
    labels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    *,
    artery_of_label: Mapping[int, str] = CAC_LABEL_TO_ARTERY,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each counted voxel's share of the Agatston score, per artery: (zyx indices (3, N),
    contribution (N,)). A voxel carries pixel area x its slice component's density weight x
    the slice normalisation, so the contributions of an artery sum to its score exactly.
    This is the score's own spatial distribution: the training target of the score map."""
    increment, row_mm, col_mm = (float(s) for s in spacing_zyx)
    pixel_area = row_mm * col_mm
    lut = _artery_lookup(labels, artery_of_label)
    where = np.flatnonzero(hu >= CALCIUM_THRESHOLD_HU)
    artery_of_candidate = lut[labels.ravel()[where]]
    out = {}
    for index, artery in enumerate(ARTERIES, start=1):
        mine = where[artery_of_candidate == index]
        zyx = np.stack(np.unravel_index(mine, hu.shape)) if mine.size else np.zeros((3, 0), int)
        if mine.size == 0:
            out[artery] = (zyx, np.zeros(0))
            continue
        component, _, _, kept, peak = _slice_components(
            zyx, hu.ravel()[mine].astype(np.float64), pixel_area
        )
        weight = np.where(
            kept, density_weight(peak) * pixel_area * increment / REFERENCE_SLICE_MM, 0
        )
        share = weight[component]
        counted = share > 0
        out[artery] = (zyx[:, counted], share[counted])
    return out


# In-plane 8-connectivity for scipy's dense labelling: neighbours within a slice, none across.
_IN_PLANE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_STRUCTURE[1] = True


def candidate_contributions(
    hu: np.ndarray, spacing_zyx: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Each voxel's share of the score the volume would have if every calcium candidate in it
    were one artery's: (flat indices into `hu`, contribution), counted voxels only.

    The same rules as `voxel_contributions` (2-D 8-connected components per slice, the 1 mm^2
    minimum area, the density weight of the component's peak, the slice normalisation), applied
    to all voxels at or above 130 HU without labels. This is the most a region of a scan can
    score; the calcium score network decides which of it is coronary. Dense labelling (scipy)
    rather than the sparse graph of `voxel_contributions`: a scan's candidates include all of
    its bone, hundreds of thousands of voxels, for which this is about three times faster.
    """
    increment, row_mm, col_mm = (float(s) for s in spacing_zyx)
    pixel_area = row_mm * col_mm
    mask = hu >= CALCIUM_THRESHOLD_HU
    components, n_components = ndimage.label(mask, _IN_PLANE_STRUCTURE)
    where = np.flatnonzero(mask)
    if n_components == 0:
        return where, np.zeros(0)
    component = components.ravel()[where] - 1
    value = hu.ravel()[where]
    area = np.bincount(component, minlength=n_components) * pixel_area
    order = np.argsort(component, kind="stable")
    peak = np.maximum.reduceat(
        value[order], np.searchsorted(component[order], np.arange(n_components))
    )
    kept = area >= MIN_COMPONENT_AREA_MM2 - _AREA_EPS
    weight = np.where(kept, density_weight(peak) * pixel_area * increment / REFERENCE_SLICE_MM, 0.0)
    share = weight[component]
    counted = share > 0
    return where[counted], share[counted]


def _score_artery(
    zyx: np.ndarray,
    value: np.ndarray,
    artery: str,
    pixel_area: float,
    voxel_volume: float,
    normalisation: float,
) -> tuple[list[Lesion], float]:
    """Lesions of one artery from its candidate voxels ((3, N) indices and their HU)."""
    component, n_components, area, kept, peak = _slice_components(zyx, value, pixel_area)
    component_score = np.where(kept, area * density_weight(peak) * normalisation, 0.0)

    counted = kept[component]
    if not counted.any():
        return [], 0.0
    zyx, component, value = zyx[:, counted], component[counted], value[counted]
    lesion, n_lesions = connected_components(zyx, _FULL_26)
    # Every voxel of a kept 2-D component lies in the same 3-D lesion.
    lesion_of_component = np.zeros(n_components, dtype=np.int64)
    lesion_of_component[component] = lesion
    kept_ids = np.flatnonzero(kept)

    score = np.bincount(lesion_of_component[kept_ids], component_score[kept_ids], n_lesions)
    area_sum = np.bincount(lesion_of_component[kept_ids], area[kept_ids], n_lesions)
    voxels = np.bincount(lesion, minlength=n_lesions)
    lesion_peak = np.full(n_lesions, -np.inf)
    np.maximum.at(lesion_peak, lesion, value)
    centroid = np.stack([np.bincount(lesion, c, n_lesions) for c in zyx]) / voxels
    first_slice = np.full(n_lesions, np.iinfo(np.int64).max)
    last_slice = np.full(n_lesions, -1)
    np.minimum.at(first_slice, lesion, zyx[0])
    np.maximum.at(last_slice, lesion, zyx[0])

    lesions = [
        Lesion(
            artery=artery,
            first_slice=int(first_slice[i]),
            last_slice=int(last_slice[i]),
            area_mm2=float(area_sum[i]),
            peak_hu=float(lesion_peak[i]),
            score=float(score[i]),
            volume_mm3=float(voxels[i] * voxel_volume),
            centroid_zyx=(float(centroid[0, i]), float(centroid[1, i]), float(centroid[2, i])),
        )
        for i in range(n_lesions)
    ]
    return lesions, float(value.sum())


def agatston_from_images(ct, labels, **kwargs) -> AgatstonResult:
    """Score SimpleITK images (HU and label map on the same grid)."""
    import SimpleITK as sitk

    sx, sy, sz = ct.GetSpacing()
    return agatston(
        sitk.GetArrayViewFromImage(ct),
        sitk.GetArrayViewFromImage(labels),
        (sz, sy, sx),
        **kwargs,
    )
