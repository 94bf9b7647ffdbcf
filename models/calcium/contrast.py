"""Is a CT series contrast-enhanced? Then it must not be given an Agatston score.

Agatston scoring is defined on non-contrast CT: its 130 HU threshold separates calcium from
unenhanced blood (about 30-60 HU). After iodinated contrast the lumen itself is at 150-450 HU,
so every enhanced vessel would count as "calcium" and real calcium hides in the bright lumen.

Two kinds of evidence, either is enough:

1. the header: Contrast/Bolus Agent (0018,0010) or Contrast/Bolus Route (0018,1040) present and
   naming something (node.volume.assembly keeps both as metadata "0018|0010" / "0018|1040" on the
   volume; a NIfTI file carries neither). A few scanners write a negative word ("NONE", "NO")
   instead of leaving the attribute empty; that is read as no contrast.
2. the image: the blood pool around the located heart centre. The statistic is the 75th
   percentile of the voxels between 0 and 1000 HU (air, lung and fat below, dense bone, metal
   and calcium above are left out) in a sphere of 40 mm radius around the heart centre from
   the registration, after a Gaussian smoothing of 1.5 mm (so that the noise of a sharp kernel
   does not lift the percentile: without it, the real lung-kernel control measures 71 HU
   instead of 45). A 40 mm sphere around the heart centre is mostly cardiac chambers and
   myocardium; the upper-middle percentile lies in the chambers' blood as long as they fill a
   quarter of the soft-tissue voxels, so an error of a few centimetres in the heart centre
   does not matter, and neither does an unenhanced myocardium next to enhanced blood.

Threshold: enhanced above 100 HU, with margin on both sides.
- Unenhanced blood is about 30-60 HU, rising with the haematocrit: in vivo aortic and caval
  blood correlates with haemoglobin and haematocrit (r 0.75; Di Giandomenico et al., Radiol Med
  1993, PMID 8516469); mean 42 HU in 200 adults, anaemia below 33-36 HU (Badhe et al., Int J
  Educ Res Health Sci 2018); none of 166 unenhanced head CTs had venous blood above 70 HU
  (AJNR, PMC7966032). Myocardium is 40-50 HU.
- Enhanced chest CT puts the aorta and the cardiac chambers at 150-450 HU: aortic CTA 350 +- 60
  HU in the thoracic aorta (Eur J Radiol Open 2015;2:58-65, PMID 26937437); even pulmonary CTAs
  judged suboptimally enhanced (< 200 HU) averaged 170 HU in the pulmonary arteries
  (Bayraktaroglu et al., Iran J Radiol 2020;17:e97230); venous-phase chest CT lies between.
- Measured here (shipped registration 2.1): the real non-contrast chest CT lung_pet_ct_dx_A0001
  45 HU (lung kernel) and 42 HU (soft kernel); the real contrast crop
  totalseg_examples/pulmonary_report 471 HU; standard and contrast phantoms: see
  docs/models/calcium.md and tests/integration/test_contrast_gate.py.
100 HU lies 30 HU above the highest unenhanced blood reported and 70 HU below the mean of
suboptimally enhanced CTAs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from models.calcium.sphere import SPHERE_RADIUS_MM, sphere_box

# DICOM attributes that say contrast was given, as metadata keys on the volume.
HEADER_TAGS = {"0018|0010": "Contrast/Bolus Agent", "0018|1040": "Contrast/Bolus Route"}
# Values some scanners write when no contrast was given (compared in upper case).
NEGATIVE_VALUES = frozenset({"NONE", "NO", "N", "N/A", "NA", "NIL", "-", "0", "NO CONTRAST"})

SMOOTHING_SIGMA_MM = 1.5
WINDOW_HU = (0.0, 1000.0)
PERCENTILE = 75.0
ENHANCED_ABOVE_HU = 100.0
# Fewer soft-tissue voxels than this (ml) in the sphere: the heart centre is not on the heart
# (or outside the scan), and the image gives no evidence either way.
MIN_MEASURED_ML = 20.0


@dataclass(frozen=True)
class ContrastAssessment:
    """Whether the series is contrast-enhanced, why, and the measured blood pool."""

    enhanced: bool
    evidence: list[str] = field(default_factory=list)  # what says so, readable, no values
    blood_pool_hu: float | None = None  # the image statistic; None: not measurable

    def to_dict(self) -> dict:
        return {
            "enhanced": self.enhanced,
            "evidence": list(self.evidence),
            "blood_pool_hu": None if self.blood_pool_hu is None else round(self.blood_pool_hu, 1),
            "threshold_hu": ENHANCED_ABOVE_HU,
        }


def header_names_contrast(value: str | None) -> bool:
    """Whether a Contrast/Bolus Agent or Route value names a contrast agent or route."""
    text = (value or "").strip()
    return bool(text) and text.upper() not in NEGATIVE_VALUES


def header_evidence(ct: sitk.Image) -> list[str]:
    """Which contrast attributes the volume's header metadata fills (names only: a value could
    be free text, and the job log shows the evidence)."""
    return [
        f"header: {name} present"
        for key, name in HEADER_TAGS.items()
        if ct.HasMetaDataKey(key) and header_names_contrast(ct.GetMetaData(key))
    ]


def blood_pool_hu(ct: sitk.Image, heart_centre_mm: Sequence[float]) -> float | None:
    """The blood-pool statistic (see the module docstring) around the heart centre; None when
    the sphere holds under MIN_MEASURED_ML of soft tissue (it is off the heart or the scan)."""
    sphere = sphere_box(ct, heart_centre_mm, SPHERE_RADIUS_MM)
    if sphere is None:
        return None
    box = sitk.SmoothingRecursiveGaussian(
        sitk.Cast(sphere.image, sitk.sitkFloat32), SMOOTHING_SIGMA_MM
    )
    values = sitk.GetArrayViewFromImage(box)[sphere.inside]  # (z, y, x) inside the sphere
    values = values[(values >= WINDOW_HU[0]) & (values <= WINDOW_HU[1])]
    if values.size * sphere.voxel_ml < MIN_MEASURED_ML:
        return None
    return float(np.percentile(values, PERCENTILE))


def assess_contrast(ct: sitk.Image, heart_centre_mm: Sequence[float]) -> ContrastAssessment:
    """The header and the image evidence for contrast enhancement (see the module docstring)."""
    evidence = header_evidence(ct)
    measured = blood_pool_hu(ct, heart_centre_mm)
    if measured is not None and measured > ENHANCED_ABOVE_HU:
        evidence.append(
            f"image: blood pool {measured:.0f} HU around the heart centre "
            f"(> {ENHANCED_ABOVE_HU:g} HU)"
        )
    return ContrastAssessment(enhanced=bool(evidence), evidence=evidence, blood_pool_hu=measured)
