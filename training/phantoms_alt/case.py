"""One case of the second phantom style: anatomy, reconstruction, calcifications, truth.

The coronary calcifications are added one at a time to the reconstructed (noisy) image until
its Agatston score, computed by `models.agatston` on the final voxels and the lesion labels,
falls in the requested risk category; a lesion that would overshoot the category is taken
back and a smaller one tried. Each random part (anatomy, acquisition, confounders, lesions,
noise, contrast) draws from its own stream of the case seed, so a variant (e.g. contrast)
changes nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from models.agatston import AgatstonResult, agatston, risk_category
from models.labels import Label
from training.phantoms_alt import GENERATOR, VERSION
from training.phantoms_alt.acquisition import (
    MAX_SLICES,
    Acquisition,
    sample_acquisition,
    sample_position,
)
from training.phantoms_alt.body import BLOOD_HU, Canvas, Patient, paint_anatomy, sample_patient
from training.phantoms_alt.grid import Grid
from training.phantoms_alt.lesions import (
    Calcification,
    fill_fraction,
    sample_confounders,
    sample_coronary,
)
from training.phantoms_alt.noise import blur_box, blur_only, psf_reach_px, reconstruct

# Scores that round into each category, and the open top of the last one.
CATEGORY_BOUNDS = {1: (0.5, 10.5), 2: (10.5, 100.5), 3: (100.5, 400.5), 4: (400.5, 2500.0)}
MAX_LESION_TRIES = 60
LABEL_HU = 5.0  # a voxel a lesion raises by this much (after blur) is in its label
HU_RANGE = (-1024, 3071)  # 12 stored bits with intercept -1024 (the DICOM writer's)
SMALL_KINDS = ("spotty", "clustered", "sliver")


@dataclass(frozen=True)
class AltOptions:
    matrix: int = 512
    contrast: bool = False  # also make the contrast-enhanced image
    max_slices: int = MAX_SLICES


@dataclass
class AltCase:
    seed: int
    target_category: int | None
    variant: str  # full, fov_crop, fov_resampled, contrast, fov_crop_contrast, ...
    grid: Grid
    acquisition: Acquisition
    patient: Patient
    image: np.ndarray  # int16 HU, canonical (z, y, x)
    labels: np.ndarray  # uint8 models.labels values
    truth: AgatstonResult
    calcifications: list[Calcification] = field(default_factory=list)
    confounders: list[Calcification] = field(default_factory=list)
    contrast_blood_hu: float | None = None
    contrast_image: np.ndarray | None = None  # made with AltOptions(contrast=True)
    seconds: float = 0.0

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.grid.spacing

    def truth_dict(self) -> dict:
        contrast = self.variant.endswith("contrast")
        return {
            "generator": GENERATOR,
            "version": VERSION,
            "evaluation_only": True,
            "seed": self.seed,
            "variant": self.variant,
            "target_category": self.target_category,
            **self.truth.to_dict(),
            # Agatston is not defined on contrast-enhanced CT: the score above is the one of
            # the unenhanced twin (same case without iodine); a scorer should refuse it.
            "contrast_enhanced": contrast,
            "scorable": not contrast,
            "blood_pool_hu": self.contrast_blood_hu if contrast else BLOOD_HU,
            "acquisition": self.acquisition.to_dict(),
            "grid": {
                "shape_zyx": list(self.grid.shape),
                "spacing_zyx": list(self.grid.spacing),
                "origin_xyz": list(self.grid.origin),
            },  # fmt: skip
            "patient": self.patient.to_dict(),
            "calcifications": [_describe(c) for c in self.calcifications],
            "confounders": [_describe(c) for c in self.confounders],
            "seconds": round(self.seconds, 2),
        }


def _describe(c: Calcification) -> dict:
    return {"kind": c.kind, "label": int(c.label), "vessel": c.vessel,
            "centre_mm": c.centre(), "density_hu": round(c.density_hu, 1)}  # fmt: skip


def streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("anatomy", "acquisition", "confounders", "lesions", "noise", "contrast", "fov")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _grid(rng, patient: Patient, acq: Acquisition, max_slices: int) -> tuple[Grid, Acquisition]:
    top = patient.lung_top_z + rng.uniform(-25, 15)
    bottom = patient.apex_z - rng.uniform(30, 90)
    needed = (patient.carina_z + 15, patient.apex_z - 15)
    increment = acq.increment_mm
    if (top - bottom) / increment > max_slices:  # thin slices: cover the heart first
        top = min(top, needed[0] + 0.5 * (max_slices * increment - (needed[0] - needed[1])))
        bottom = max(bottom, top - max_slices * increment)
        if (top - bottom) < needed[0] - needed[1]:
            increment = float(np.ceil((needed[0] - needed[1]) / max_slices * 10) / 10)
            top, bottom = needed[0], needed[0] - max_slices * increment
            acq = replace(acq, increment_mm=increment)
    n = int(np.floor((top - bottom) / increment)) + 1
    p = acq.pixel_mm
    origin = (-acq.fov_mm / 2 + p / 2, -acq.fov_mm / 2 + p / 2, round(bottom, 2))
    return Grid((n, acq.matrix, acq.matrix), (increment, p, p), origin), acq


def _contribution(calc: Calcification, anatomy: np.ndarray, grid: Grid, acq: Acquisition,
                  calcium: float):  # fmt: skip
    """(box, unblurred and blurred HU change) of one calcification on the grid, or None."""
    rendered = fill_fraction(calc, grid, acq.thickness_mm)
    if rendered is None:
        return None
    box, fraction = rendered
    reach = psf_reach_px(acq.pixel_mm, acq.kernel)
    padded = (
        box[0],
        slice(max(box[1].start - reach, 0), min(box[1].stop + reach, grid.shape[1])),
        slice(max(box[2].start - reach, 0), min(box[2].stop + reach, grid.shape[2])),
    )
    full = np.zeros(tuple(s.stop - s.start for s in padded), np.float32)
    inner = (slice(None), slice(box[1].start - padded[1].start, box[1].stop - padded[1].start),
             slice(box[2].start - padded[2].start, box[2].stop - padded[2].start))  # fmt: skip
    full[inner] = fraction
    change = full * (calc.density_hu * calcium - anatomy[padded])
    return padded, change, blur_box(change, acq.pixel_mm, acq.kernel)


_NEIGHBOURS = np.zeros((3, 3, 3), bool)
_NEIGHBOURS[1] = True  # in-plane 8-neighbourhood: one pixel of margin, as an annotator draws


def _label(labels, owner, box, blurred, label) -> None:
    """Label the voxels a calcification raises by LABEL_HU or more (plus a pixel) where it
    raises them more than any calcification labelled before."""
    region = ndimage.binary_dilation(blurred >= LABEL_HU, _NEIGHBOURS)
    mine = region & (blurred >= owner[box])
    labels[box][mine] = label
    owner[box] = np.where(mine, np.maximum(blurred, 0), owner[box])


def generate_case(seed: int, category: int | None, options: AltOptions = AltOptions()) -> AltCase:
    """A chest CT of the second style; category None: no coronary calcium target (0 lesions)."""
    start = time.perf_counter()
    rng = streams(seed)
    position = sample_position(rng["acquisition"])
    patient = sample_patient(rng["anatomy"], prone=position.endswith("P"))
    width = 2 * patient.half_width
    water = 2 * np.sqrt(patient.half_width * patient.half_depth) * 0.9  # lungs lower it
    acq = sample_acquisition(rng["acquisition"], position, width, water, options.matrix)
    grid, acq = _grid(rng["acquisition"], patient, acq, options.max_slices)
    canvas = Canvas(grid, acq.kvp)
    paint_anatomy(canvas, patient, rng["anatomy"])

    labels = canvas.labels
    owner = np.zeros(grid.shape, np.float32)  # strongest calcification per voxel (lazy pages)
    confounders = sample_confounders(rng["confounders"], patient.heart, patient.aorta, Label)
    anatomy = canvas.hu
    for calc in confounders:  # part of the anatomy: the reconstruction blurs them
        made = _contribution(calc, anatomy, grid, acq, canvas.calcium)
        if made is not None:
            box, change, blurred = made
            anatomy[box] += change
            _label(labels, owner, box, blurred, calc.label)
    overlap = max(0.0, 1 - acq.increment_mm / acq.thickness_mm)
    image = reconstruct(anatomy, acq.pixel_mm, acq.kernel, acq.noise_sd_hu, 0.6 * overlap,
                        rng["noise"])  # fmt: skip
    calcifications = []
    if category:
        calcifications = _add_coronary(rng["lesions"], category, patient, grid, acq, canvas,
                                       image, owner)  # fmt: skip
    final = np.clip(np.rint(image), *HU_RANGE).astype(np.int16)
    truth = agatston(final, labels, grid.spacing)
    case = AltCase(seed, category, "full", grid, acq, patient, final, labels, truth,
                   calcifications, confounders)  # fmt: skip
    if options.contrast:
        blood = float(rng["contrast"].uniform(200, 450))
        delta = blur_only(canvas.iodine * np.float32(blood - BLOOD_HU), acq.pixel_mm, acq.kernel)
        case.contrast_blood_hu = blood
        case.contrast_image = np.clip(np.rint(image + delta), *HU_RANGE).astype(np.int16)
    case.seconds = time.perf_counter() - start
    return case


def _add_coronary(rng, category, patient, grid, acq, canvas, image, owner):
    """Add coronary calcifications to `image` until its truth is in `category`."""
    heart = patient.heart
    r = heart.bounding_radius() + 10
    region = grid.index_box(heart.centre - r, heart.centre + r)
    lo, hi = CATEGORY_BOUNDS[category]
    target = float(np.exp(rng.uniform(np.log(max(lo, 1.0)), np.log(hi))))
    labels = canvas.labels
    score, cap, added = 0.0, 1.8, []

    def region_score() -> float:
        hu = np.rint(image[region]).astype(np.int16)
        return agatston(hu, labels[region], grid.spacing).total

    for _ in range(MAX_LESION_TRIES):
        if risk_category(score) == category and score >= target:
            break
        gap = target - score
        scale = min(float(np.clip((gap / 12) ** (1 / 3), 0.5, 1.8)) * rng.uniform(0.8, 1.2), cap)
        small = gap < 6
        calc = sample_coronary(rng, heart, scale, *((SMALL_KINDS, (1, 1, 1)) if small else ()))
        made = _contribution(calc, canvas.hu, grid, acq, canvas.calcium)
        if made is None:
            continue
        box, _, blurred = made
        saved = image[box].copy(), labels[box].copy(), owner[box].copy()
        image[box] += blurred
        _label(labels, owner, box, blurred, calc.label)
        new = region_score()
        if risk_category(new) > category:  # overshoot: take it back, try smaller ones
            image[box], labels[box], owner[box] = saved
            cap = max(cap * 0.7, 0.3)
            continue
        added.append(calc)
        score = new
    return added
