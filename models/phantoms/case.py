"""One synthetic chest CT case: anatomy, acquisition, calcium and its ground truth."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.agatston import AgatstonResult, agatston
from models.labels import Label
from models.phantoms import materials as mat
from models.phantoms.acquisition import (
    KVP_CHOICES,
    Acquisition,
    add_noise_spikes,
    sample_acquisition,
    scan,
)
from models.phantoms.anatomy import paint_anatomy, sample_levels, sample_patient
from models.phantoms.calcium import (
    Calcification,
    compose,
    ostial_calcium,
    render,
    sample_confounders,
    sample_incidental,
    sample_lesions,
)
from models.phantoms.canvas import Canvas
from models.phantoms.devices import paint_devices
from models.phantoms.geometry import Grid
from models.phantoms.variety import (
    STANDARD,
    Variety,
    sample_heart_fat,
    sharp_kernel_noise_sd,
)

# Version 2 adds incidental calcifications (calcium.sample_incidental) drawn from a random
# stream of their own: every other part of a case (anatomy, scan, noise, lesions) is what
# version 1 made from the same seed.
# Version 3 is version 2 with the broad variety (variety.py: wider heart poses and sizes,
# coronary dominance and courses, lesion shapes and densities, stents, pacemaker leads and
# ostial calcium), drawn from a third stream; CaseOptions(variety=STANDARD) makes version 2.
# Version 4 is version 3 with fat around the heart and noisier sharp kernels (variety.py),
# drawn from a fourth stream; CaseOptions(variety=BROAD) still makes version 3.
GENERATOR_VERSION = "2"
BROAD_GENERATOR_VERSION = "3"
FAT_GENERATOR_VERSION = "4"
MAX_ATTEMPTS = 10  # lesion sets tried to reach the requested category
MAX_TOTAL = 5000.0  # category 4 is open-ended; scores above this are rare in chest CT cohorts


@dataclass(frozen=True)
class CaseOptions:
    matrix: int = 512
    protocol: tuple[float, float] | None = None  # (thickness, increment) mm; None: sampled
    n_slices: int | None = None  # None: coverage sampled in 150-350 mm
    incidental: bool = True  # False: no incidental calcifications, as generator version 1
    # Blood pool HU of a contrast-enhanced scan (heart chambers, aorta, great and pulmonary
    # vessels, coronary lumen: everything painted as blood); None: unenhanced (the default,
    # which leaves every case exactly as before). Enhanced chest CT: about 150-450 HU.
    contrast_hu: float | None = None
    variety: Variety = STANDARD  # variety.BROAD: version 3; variety.BROAD_WITH_FAT: 4

    @property
    def generator_version(self) -> str:
        if self.variety.heart_fat:
            return FAT_GENERATOR_VERSION
        return BROAD_GENERATOR_VERSION if self.variety.broad else GENERATOR_VERSION


@dataclass
class Case:
    seed: int
    target_category: int | None
    grid: Grid
    acquisition: Acquisition
    image: np.ndarray  # int16 HU, (slice, row, column)
    labels: np.ndarray  # uint8, models.labels.Label values
    truth: AgatstonResult
    calcifications: list[Calcification]
    patient: dict
    attempts: int
    generator_version: str = GENERATOR_VERSION

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        sx, sy, sz = self.grid.spacing
        return (sz, sy, sx)


def generate_case(
    seed: int, target_category: int | None = None, options: CaseOptions = CaseOptions()
) -> Case:
    """Render one case reproducibly from `seed`.

    With a target category the lesion set is redrawn (growing or shrinking the burden) until
    the ground truth, measured on the final image, falls in that category; the anatomy, the
    acquisition and the noise stay the same between attempts.
    """
    rng = np.random.default_rng(seed)
    variety = options.variety
    variety_rng = np.random.default_rng([seed, 3]) if variety.broad else None  # version 3's
    body_width = float(rng.uniform(*variety.body_width_mm))
    kvp = float(rng.choice(KVP_CHOICES))
    patient = sample_patient(rng, body_width, kvp, variety, variety_rng)
    version_4_rng = np.random.default_rng([seed, 4]) if variety.heart_fat else None
    if version_4_rng is not None:
        fat = sample_heart_fat(version_4_rng)
        patient.epicardial_fat, patient.groove_fat = fat["epicardial"], fat["groove"]
        patient.pericardial_fat, patient.pericardial_fat_shift = fat["pad_mm"], fat["pad_shift_mm"]
    if options.contrast_hu is not None:
        # Set after sampling, so that the random stream (and every other part of the case)
        # is what the unenhanced case of this seed draws.
        patient.tissue["blood"] = float(options.contrast_hu)
    levels = sample_levels(patient, rng)
    heart_low, heart_high = patient.heart_bounds(margin=3.0)
    acq = sample_acquisition(
        rng,
        body_width,
        heart_low,
        heart_high,
        patient.centre_xy,
        kvp,
        matrix=options.matrix,
        protocol=options.protocol,
        n_slices=options.n_slices,
    )
    if version_4_rng is not None and acq.sharp_kernel:
        acq = replace(acq, noise_sd_hu=sharp_kernel_noise_sd(version_4_rng, acq.noise_sd_hu))
    grid = acq.grid()
    canvas = Canvas.empty(grid, mat.AIR)
    anatomy = paint_anatomy(canvas, patient, levels, rng, variety_rng)
    devices = paint_devices(canvas, anatomy, variety_rng) if variety_rng is not None else []
    incidental_rng = np.random.default_rng([seed, 2])  # version 2's own stream (see above)
    incidental = (  # paints node tissue
        sample_incidental(anatomy, canvas, acq, incidental_rng) if options.incidental else []
    )

    base = scan(canvas.hu, acq, rng)
    spikes = add_noise_spikes(base, canvas.labels != Label.BACKGROUND, rng)

    category = target_category if target_category is not None else int(rng.integers(5))
    confounders = sample_confounders(anatomy, acq, category, rng) + incidental
    if variety_rng is not None:
        confounders += ostial_calcium(anatomy, acq, variety_rng)
    rendered_confounders = [r for c in confounders if (r := render(c, canvas, canvas.hu, acq))]
    scale = 1.0
    for attempt in range(1, MAX_ATTEMPTS + 1):  # noqa: B007 - reported after the loop
        lesions = sample_lesions(anatomy, acq, category, scale, rng, variety_rng)
        rendered = rendered_confounders + [
            r for c in lesions if (r := render(c, canvas, canvas.hu, acq))
        ]
        image, labels = compose(base, canvas.labels, rendered)
        truth = agatston(image, labels, (grid.spacing[2], grid.spacing[1], grid.spacing[0]))
        too_high = truth.total > MAX_TOTAL
        if target_category is None or (truth.category == target_category and not too_high):
            break
        scale *= 1.6 if truth.category < target_category else 1 / 1.6

    summary = {
        "body_width_mm": round(body_width, 1),
        "body_depth_mm": round(2 * patient.half_depth, 1),
        "subcutaneous_fat_mm": round(patient.fat, 1),
        "heart_centre_mm": [round(float(v), 1) for v in patient.heart_centre],
        "heart_radii_mm": [round(float(v), 1) for v in patient.heart_radii],
        "heart_long_axis": [round(float(v), 3) for v in patient.heart_axes[0]],
        "heart_bounds_mm": [[round(float(v), 1) for v in b] for b in patient.heart_bounds()],
        "noise_spikes": spikes,
        "tissue_hu": {k: round(v, 1) for k, v in patient.tissue.items()},
    }
    if variety.broad:
        summary["dominance"] = anatomy.coronaries.dominance
        summary["devices"] = devices
    if variety.heart_fat:
        summary["epicardial_fat_mm"] = round(patient.epicardial_fat, 1)
        summary["pericardial_fat_mm"] = [round(float(v), 1) for v in patient.pericardial_fat]
        summary["noise_sd_hu"] = round(acq.noise_sd_hu, 1)
    return Case(
        seed=seed,
        target_category=target_category,
        grid=grid,
        acquisition=acq,
        image=image,
        labels=labels,
        truth=truth,
        calcifications=confounders + lesions,
        patient=summary,
        attempts=attempt,
        generator_version=options.generator_version,
    )
