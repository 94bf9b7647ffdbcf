"""The calcium score as a DICOM SR: TID 1500 Imaging Measurement Report, Comprehensive 3D SR.

Content tree (DESIGN.md, "Contracts", SR):

    Imaging Measurement Report (126000, DCM)                  TID 1500
      language, observer = device "ctnode" (TID 1004), procedure reported = CT of chest
      Image Library: modality + frame of reference, one entry per source CT instance (1600)
      Imaging Measurements
        Measurement Group "Coronary artery calcium"            TID 1501
          finding site: Coronary artery; algorithm name + version (TID 4019)
          NUM Coronary artery calcium score {Agatston}, method Agatston, site Coronary artery
          NUM ... the same concept per artery, site LAD (left main included) / LCX / RCA
          NUM Calcium Volume mm3 (total, per artery)           when given
          CODE risk category (five classes) and CAC-DRS        local scheme 99CTNODE
      Qualitative Evaluations (C0034375, UMLS)                 TID 1500 row "Qualitative ..."
        TEXT Comment: automated result, not verified, not a diagnosis
        TEXT Comment: why the result is indeterminate          when it is
        TEXT Quality Issue: one per quality flag (or a Comment that there is none)

Indeterminate results (models/calcium/result.py) carry no risk category: the CODE items for the
risk category and CAC-DRS have the value SCT 82334004 "Indeterminate".
- Not scored (a contrast-enhanced series): no NUM items at all; the group states CODE
  "Not scorable" (99CTNODE) = "Contrast-enhanced" (99CTNODE), and a Comment gives the evidence.
- Scored but untrusted (registration_failure, heart_outside_field_of_view,
  heart_not_in_field_of_view): the measured NUM items stay, for the record and for a reader
  who checks the images, each qualified by DICOM CID 42 "Value indeterminate" (114011) in its
  Numeric Value Qualifier Code Sequence, so that no receiving system takes them for a valid
  score; the Comment says they are not valid and why. Dropping them would hide what the
  algorithm measured; keeping them unqualified would look valid.

The document is COMPLETE, UNVERIFIED and PRELIMINARY: no person has checked it and it is not
the definitive report. Scores are stored to 0.01 Agatston units, volumes to 0.01 mm^3.
`read_calcium_sr` reads the figures back from any such SR (as built here or as a PACS returns
it), with plain pydicom, so it works on whatever the PACS sends back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from models.calcium.result import CONTRAST_FLAG, CalciumResult
from models.labels import ARTERIES
from node.results import codes as rc
from node.results.equipment import (
    MANUFACTURER,
    algorithm_identity,
    equipment,
)
from node.results.source import check_series, copy_patient_and_study

SR_SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "ctnode coronary calcium SR - automated, not a diagnosis"
DISCLAIMER = (
    "Automated result of {algorithm}, not verified by a physician. Not a diagnosis: the "
    "coronary calcium score must be confirmed by a radiologist on the images."
)
NO_QUALITY_ISSUES = "No quality issues flagged by the algorithm."
VALUE_DECIMALS = 2


@dataclass(frozen=True)
class CalciumReport:
    """What a ctnode calcium SR says, as read back from the dataset."""

    agatston_total: float | None  # None: not scored
    agatston_per_artery: dict[str, float]
    category: int | None  # None: indeterminate
    cacdrs: str | None  # None: indeterminate
    flags: list[str]
    algorithm_name: str
    algorithm_version: str
    volume_mm3: float | None = None
    volume_per_artery_mm3: dict[str, float] = field(default_factory=dict)
    referenced_sop_instance_uids: list[str] = field(default_factory=list)
    not_scorable: str | None = None  # why no score was given ("Contrast-enhanced")
    values_valid: bool = True  # False: the NUM items are qualified "Value indeterminate"


def build_calcium_sr(
    source: Sequence[Dataset],
    result: CalciumResult,
    *,
    volume_mm3: float | None = None,
    volume_per_artery_mm3: Mapping[str, float] | None = None,
    series_number: int = SR_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR with the calcium score of the series `source` (its CT instances,
    any order), in the source study. The calcium volume, total and per artery, is the
    result's (the exact scoring method measures it; the regression has none) unless given."""
    instances = check_series(source)
    if volume_mm3 is None and volume_per_artery_mm3 is None:
        volume_mm3 = result.volume_mm3_total
        volume_per_artery_mm3 = result.volume_mm3_per_artery if volume_mm3 is not None else None
    name, model_version = algorithm_identity(result)
    group = _measurement_group(result, name, model_version, volume_mm3, volume_per_artery_mm3)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(name),
        procedure_reported=rc.PROCEDURE_CT_CHEST,
        imaging_measurements=[group],
        title=codes.cid7021.ImagingMeasurementReport,
    )
    content = report[0].ContentSequence
    # The Image Library goes before Imaging Measurements (the last item so far).
    content.insert(len(content) - 1, _image_library(instances))
    content.append(_statements(result, name, model_version))
    document = hd.sr.Comprehensive3DSR(
        evidence=instances,
        content=report[0],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        **equipment(),
        series_description=SERIES_DESCRIPTION,
        is_complete=True,
        is_final=False,  # the radiologist's report is the definitive one
        is_verified=False,
        coding_schemes=[rc.local_coding_scheme()],
        specific_character_set=None,  # set by copy_patient_and_study
    )
    copy_patient_and_study(document, instances[0])
    return document


def _observation_context(algorithm_name: str) -> hd.sr.ObservationContext:
    # The device UID is derived from the algorithm's name, so one model is one device.
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["ctnode device", algorithm_name]),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm_name,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _image_library(instances: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600 Image Library: one group with the descriptors the instances share (modality,
    frame of reference) and one entry per instance.

    highdicom's ImageLibrary also writes every entry's own descriptors (TID 1602, optional),
    which makes a 300-slice report take tens of seconds to build and validate; the positions
    they would repeat are in the CT instances themselves.
    """
    has_acq_context = hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    group = hd.sr.ContainerContentItem(codes.DCM.ImageLibraryGroup, relationship_type=contains)
    group.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.CodeContentItem(codes.DCM.Modality, rc.MODALITY_CT, has_acq_context),
            hd.sr.UIDRefContentItem(
                codes.DCM.FrameOfReferenceUID, instances[0].FrameOfReferenceUID, has_acq_context
            ),
        ]
        + [
            hd.sr.ImageContentItem(
                rc.SOURCE,
                referenced_sop_class_uid=ds.SOPClassUID,
                referenced_sop_instance_uid=ds.SOPInstanceUID,
                relationship_type=contains,
            )
            for ds in instances
        ]
    )
    library = hd.sr.ContainerContentItem(codes.DCM.ImageLibrary, relationship_type=contains)
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def _score(
    value: float, site: hd.sr.CodedConcept, qualifier: hd.sr.CodedConcept | None = None
) -> hd.sr.Measurement:
    """An Agatston score NUM (Agatston scoring method) at `site`."""
    return _measurement(
        rc.CALCIUM_SCORE, rc.AGATSTON_UNIT, value, site, qualifier, rc.AGATSTON_METHOD
    )


def _volume(
    value: float, site: hd.sr.CodedConcept, qualifier: hd.sr.CodedConcept | None = None
) -> hd.sr.Measurement:
    """A calcium volume NUM (mm3) at `site`."""
    return _measurement(rc.CALCIUM_VOLUME, rc.CUBIC_MILLIMETER, value, site, qualifier)


def _measurement(
    name: hd.sr.CodedConcept,
    unit: hd.sr.CodedConcept,
    value: float,
    site: hd.sr.CodedConcept,
    qualifier: hd.sr.CodedConcept | None,
    method: hd.sr.CodedConcept | None = None,
) -> hd.sr.Measurement:
    """A NUM at `site`, stored to VALUE_DECIMALS; `qualifier` marks an untrusted value."""
    return hd.sr.Measurement(
        name=name,
        value=round(float(value), VALUE_DECIMALS),
        unit=unit,
        qualifier=qualifier,
        method=method,
        finding_sites=[hd.sr.FindingSite(site)],
    )


def _measurement_group(
    result: CalciumResult,
    algorithm_name: str,
    algorithm_version: str,
    volume_mm3: float | None,
    volume_per_artery_mm3: Mapping[str, float] | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = []
    if result.scored:  # a series that was not scored has no measurement to report
        missing = [a for a in ARTERIES if a not in result.agatston_per_artery]
        if missing:
            raise ValueError(f"result lacks per-artery scores for {missing}")
        # An untrusted result's numbers stay, qualified as not valid (module docstring).
        q = rc.VALUE_INDETERMINATE if result.indeterminate else None
        measurements = [_score(result.agatston_total, rc.CORONARY_ARTERY, q)]
        measurements += [
            _score(result.agatston_per_artery[a], rc.ARTERY_SITES[a], q) for a in ARTERIES
        ]
        if volume_mm3 is not None:
            measurements.append(_volume(volume_mm3, rc.CORONARY_ARTERY, q))
        for artery, value in (volume_per_artery_mm3 or {}).items():
            measurements.append(_volume(value, rc.ARTERY_SITES[artery], q))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier="Coronary artery calcium"
        ),
        finding_sites=[hd.sr.FindingSite(rc.CORONARY_ARTERY)],
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=algorithm_name,
            version=algorithm_version,
            family=rc.ALGORITHM_FAMILY_AI,
            manufacturer=MANUFACTURER,
        ),
        measurements=measurements or None,
        qualitative_evaluations=_category_evaluations(result),
    )


def _category_evaluations(result: CalciumResult) -> list[hd.sr.QualitativeEvaluation]:
    """Risk category and CAC-DRS, "Indeterminate" when the result cannot be trusted; before
    them, for a series that was not scored, the coded reason ("Not scorable: contrast-enhanced")."""
    evaluations = []
    if not result.scored:
        reason = rc.NOT_SCORABLE_REASONS[CONTRAST_FLAG]
        evaluations.append(hd.sr.QualitativeEvaluation(rc.NOT_SCORABLE, reason))
    category, cacdrs = result.reported_category, result.reported_cacdrs
    evaluations += [
        hd.sr.QualitativeEvaluation(
            rc.RISK_CATEGORY,
            rc.INDETERMINATE if category is None else rc.RISK_CATEGORY_VALUES[category],
        ),
        hd.sr.QualitativeEvaluation(
            rc.CACDRS_CATEGORY, rc.INDETERMINATE if cacdrs is None else rc.CACDRS_VALUES[cacdrs]
        ),
    ]
    return evaluations


def indeterminate_statement(result: CalciumResult) -> str | None:
    """Why a result carries no risk category, in words (None when it has one)."""
    if not result.scored:
        contrast = result.contrast or {}
        evidence = "; ".join(contrast.get("evidence", [])) or "contrast_enhanced"
        return (
            f"Not scorable: contrast-enhanced ({evidence}). Agatston scoring is defined on "
            "non-contrast CT only; no score is given."
        )
    if result.indeterminate:
        return (
            f"Risk category indeterminate: the quality flag(s) {', '.join(result.untrusted_flags)} "
            "say the score cannot be trusted. The measured values are qualified as 'Value "
            "indeterminate' and are not a valid score."
        )
    return None


def _statements(
    result: CalciumResult, algorithm_name: str, algorithm_version: str
) -> hd.sr.ContainerContentItem:
    """The report-level Qualitative Evaluations: the disclaimer and the quality flags."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    algorithm = f"{algorithm_name} {algorithm_version}"
    items = [hd.sr.TextContentItem(rc.COMMENT, DISCLAIMER.format(algorithm=algorithm), contains)]
    why = indeterminate_statement(result)
    if why is not None:
        items.append(hd.sr.TextContentItem(rc.COMMENT, why, contains))
    items += [hd.sr.TextContentItem(rc.QUALITY_ISSUE, flag, contains) for flag in result.flags]
    if not result.flags:
        items.append(hd.sr.TextContentItem(rc.COMMENT, NO_QUALITY_ISSUES, contains))
    container = hd.sr.ContainerContentItem(rc.QUALITATIVE_EVALUATIONS, relationship_type=contains)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


# --- reading back -------------------------------------------------------------------------


def read_calcium_sr(ds: Dataset) -> CalciumReport:
    """The figures of a ctnode calcium SR (as built by build_calcium_sr).

    Raises ValueError when the dataset is not such a report (no total score, a score in
    another unit, a site that is not one of the arteries).
    """
    total = None
    per_artery: dict[str, float] = {}
    volume = None
    volume_per_artery: dict[str, float] = {}
    category = cacdrs = None
    has_category = has_cacdrs = False
    not_scorable = None
    values_valid = True
    flags: list[str] = []
    algorithm_name = algorithm_version = ""
    for item in _walk(ds.get("ContentSequence", [])):
        concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if concept is None:
            continue
        if item.ValueType == "NUM" and _qualified_indeterminate(item):
            values_valid = False
        if item.ValueType == "NUM" and rc.same_code(concept, rc.CALCIUM_SCORE):
            total = _read_site_num(item, rc.AGATSTON_UNIT, per_artery, total)
        elif item.ValueType == "NUM" and rc.same_code(concept, rc.CALCIUM_VOLUME):
            volume = _read_site_num(item, rc.CUBIC_MILLIMETER, volume_per_artery, volume)
        elif item.ValueType == "CODE" and rc.same_code(concept, rc.RISK_CATEGORY):
            has_category, value = True, item.ConceptCodeSequence[0]
            if not rc.same_code(value, rc.INDETERMINATE):
                category = int(str(value.CodeValue).removeprefix("CAT"))
        elif item.ValueType == "CODE" and rc.same_code(concept, rc.CACDRS_CATEGORY):
            has_cacdrs, value = True, item.ConceptCodeSequence[0]
            if not rc.same_code(value, rc.INDETERMINATE):
                cacdrs = str(value.CodeValue)
        elif item.ValueType == "CODE" and rc.same_code(concept, rc.NOT_SCORABLE):
            not_scorable = str(item.ConceptCodeSequence[0].CodeMeaning)
        elif item.ValueType == "TEXT" and rc.same_code(concept, rc.QUALITY_ISSUE):
            flags.append(str(item.TextValue))
        elif item.ValueType == "TEXT" and rc.same_code(concept, codes.DCM.AlgorithmName):
            algorithm_name = str(item.TextValue)
        elif item.ValueType == "TEXT" and rc.same_code(concept, codes.DCM.AlgorithmVersion):
            algorithm_version = str(item.TextValue)
    if (total is None and not_scorable is None) or not (has_category and has_cacdrs):
        raise ValueError("not a ctnode calcium SR: total score, category or CAC-DRS missing")
    referenced = [
        str(instance.ReferencedSOPInstanceUID)
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    ]
    return CalciumReport(
        agatston_total=total,
        agatston_per_artery=per_artery,
        category=category,
        cacdrs=cacdrs,
        flags=flags,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        volume_mm3=volume,
        volume_per_artery_mm3=volume_per_artery,
        referenced_sop_instance_uids=referenced,
        not_scorable=not_scorable,
        values_valid=values_valid,
    )


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _qualified_indeterminate(item: Dataset) -> bool:
    qualifiers = item.get("NumericValueQualifierCodeSequence", [])
    return any(rc.same_code(q, rc.VALUE_INDETERMINATE) for q in qualifiers)


def _num(item: Dataset) -> float:
    value = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in value:
        return float(value.FloatingPointValue)
    return float(value.NumericValue)


def _read_site_num(item: Dataset, unit, per_site: dict[str, float], whole: float | None):
    """A NUM read back: the whole heart's (no finding site: returned in place of `whole`) or
    one artery's (stored in `per_site`, `whole` returned unchanged)."""
    _check_unit(item, unit)
    site = _site(item)
    if site is None:
        return _num(item)
    per_site[site] = _num(item)
    return whole


def _check_unit(item: Dataset, unit: hd.sr.CodedConcept) -> None:
    actual = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    if not rc.same_code(actual, unit):
        raise ValueError(f"unexpected unit {actual.CodeValue!r}, expected {unit.value!r}")


def _site(item: Dataset) -> str | None:
    """The artery a NUM item is about, or None for the coronary arteries as a whole."""
    for child in item.get("ContentSequence", []):
        if rc.same_code(child.ConceptNameCodeSequence[0], codes.SCT.FindingSite):
            site = child.ConceptCodeSequence[0]
            if rc.same_code(site, rc.CORONARY_ARTERY):
                return None
            for artery, code in rc.ARTERY_SITES.items():
                if rc.same_code(site, code):
                    return artery
            raise ValueError(f"unexpected finding site {site.CodeValue!r}")
    return None
