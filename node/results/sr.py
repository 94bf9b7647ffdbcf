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
        TEXT Quality Issue: one per quality flag (or a Comment that there is none)

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

from models.calcium.result import CalciumResult
from models.labels import ARTERIES
from node.results import codes as rc
from node.results.equipment import (
    MANUFACTURER,
    MODEL_NAME,
    algorithm_identity,
    software_version,
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

    agatston_total: float
    agatston_per_artery: dict[str, float]
    category: int
    cacdrs: str
    flags: list[str]
    algorithm_name: str
    algorithm_version: str
    volume_mm3: float | None = None
    volume_per_artery_mm3: dict[str, float] = field(default_factory=dict)
    referenced_sop_instance_uids: list[str] = field(default_factory=list)


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
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_version(),
        series_description=SERIES_DESCRIPTION,
        is_complete=True,
        is_final=False,  # the radiologist's report is the definitive one
        is_verified=False,
        coding_schemes=[rc.local_coding_scheme()],
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


def _score(value: float, site: hd.sr.CodedConcept) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=rc.CALCIUM_SCORE,
        value=round(float(value), VALUE_DECIMALS),
        unit=rc.AGATSTON_UNIT,
        method=rc.AGATSTON_METHOD,
        finding_sites=[hd.sr.FindingSite(site)],
    )


def _volume(value: float, site: hd.sr.CodedConcept) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=rc.CALCIUM_VOLUME,
        value=round(float(value), VALUE_DECIMALS),
        unit=rc.CUBIC_MILLIMETER,
        finding_sites=[hd.sr.FindingSite(site)],
    )


def _measurement_group(
    result: CalciumResult,
    algorithm_name: str,
    algorithm_version: str,
    volume_mm3: float | None,
    volume_per_artery_mm3: Mapping[str, float] | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    missing = [a for a in ARTERIES if a not in result.agatston_per_artery]
    if missing:
        raise ValueError(f"result lacks per-artery scores for {missing}")
    measurements = [_score(result.agatston_total, rc.CORONARY_ARTERY)]
    measurements += [_score(result.agatston_per_artery[a], rc.ARTERY_SITES[a]) for a in ARTERIES]
    if volume_mm3 is not None:
        measurements.append(_volume(volume_mm3, rc.CORONARY_ARTERY))
    for artery, value in (volume_per_artery_mm3 or {}).items():
        measurements.append(_volume(value, rc.ARTERY_SITES[artery]))
    evaluations = [
        hd.sr.QualitativeEvaluation(rc.RISK_CATEGORY, rc.RISK_CATEGORY_VALUES[result.category]),
        hd.sr.QualitativeEvaluation(rc.CACDRS_CATEGORY, rc.CACDRS_VALUES[result.cacdrs]),
    ]
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
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _statements(
    result: CalciumResult, algorithm_name: str, algorithm_version: str
) -> hd.sr.ContainerContentItem:
    """The report-level Qualitative Evaluations: the disclaimer and the quality flags."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    algorithm = f"{algorithm_name} {algorithm_version}"
    items = [hd.sr.TextContentItem(rc.COMMENT, DISCLAIMER.format(algorithm=algorithm), contains)]
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
    flags: list[str] = []
    algorithm_name = algorithm_version = ""
    for item in _walk(ds.get("ContentSequence", [])):
        concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if concept is None:
            continue
        if item.ValueType == "NUM" and rc.same_code(concept, rc.CALCIUM_SCORE):
            _check_unit(item, rc.AGATSTON_UNIT)
            site = _site(item)
            if site is None:
                total = _num(item)
            else:
                per_artery[site] = _num(item)
        elif item.ValueType == "NUM" and rc.same_code(concept, rc.CALCIUM_VOLUME):
            _check_unit(item, rc.CUBIC_MILLIMETER)
            site = _site(item)
            if site is None:
                volume = _num(item)
            else:
                volume_per_artery[site] = _num(item)
        elif item.ValueType == "CODE" and rc.same_code(concept, rc.RISK_CATEGORY):
            category = int(str(item.ConceptCodeSequence[0].CodeValue).removeprefix("CAT"))
        elif item.ValueType == "CODE" and rc.same_code(concept, rc.CACDRS_CATEGORY):
            cacdrs = str(item.ConceptCodeSequence[0].CodeValue)
        elif item.ValueType == "TEXT" and rc.same_code(concept, rc.QUALITY_ISSUE):
            flags.append(str(item.TextValue))
        elif item.ValueType == "TEXT" and rc.same_code(concept, codes.DCM.AlgorithmName):
            algorithm_name = str(item.TextValue)
        elif item.ValueType == "TEXT" and rc.same_code(concept, codes.DCM.AlgorithmVersion):
            algorithm_version = str(item.TextValue)
    if total is None or category is None or cacdrs is None:
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
    )


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _num(item: Dataset) -> float:
    value = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in value:
        return float(value.FloatingPointValue)
    return float(value.NumericValue)


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
