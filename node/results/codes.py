"""Coded concepts of ctnode's result objects (SR, SEG), in one place.

The SR concepts follow the contract in DESIGN.md ("Contracts"); the SNOMED CT and DCM codes are
the ones listed in REFERENCE.md section 3. Where DICOM has no standard code (the five-class risk
category and CAC-DRS), ctnode uses its own local coding scheme `99CTNODE` (PS3.16 8.2: designators
starting with "99" are private) and names it in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from models.agatston import CATEGORY_NAMES

# --- the Agatston score (DESIGN.md SR contract) ---
CALCIUM_SCORE = CodedConcept("450360000", "SCT", "Coronary artery calcium score")
AGATSTON_UNIT = CodedConcept("{Agatston}", "UCUM", "Agatston units")
AGATSTON_METHOD = CodedConcept("112055", "DCM", "Agatston scoring method")
CALCIUM_VOLUME = CodedConcept("122660", "DCM", "Calcium Volume")
CUBIC_MILLIMETER = CodedConcept("mm3", "UCUM", "cubic millimeter")

# --- anatomy ---
CORONARY_ARTERY = CodedConcept("41801008", "SCT", "Coronary artery")
ARTERY_SITES: dict[str, CodedConcept] = {
    # The left main is scored under LAD (REFERENCE.md section 2), so LAD stands for both.
    "LAD": CodedConcept("59438005", "SCT", "Left anterior descending coronary artery"),
    "LCX": CodedConcept("57396003", "SCT", "Circumflex coronary artery"),
    "RCA": CodedConcept("13647002", "SCT", "Right coronary artery"),
}

# --- the report's frame ---
PROCEDURE_CT_CHEST = CodedConcept("169069000", "SCT", "CT of chest")
ALGORITHM_FAMILY_AI = CodedConcept("123110", "DCM", "Artificial Intelligence")
MODALITY_CT = CodedConcept("CT", "DCM", "Computed Tomography")
SOURCE = CodedConcept("260753009", "SCT", "Source")  # Image Library entries, as highdicom's
COMMENT = CodedConcept("121106", "DCM", "Comment")
QUALITY_ISSUE = CodedConcept("113010", "DCM", "Quality Issue")
# TID 1500 row "Qualitative Evaluations": a container for report-level CODE/TEXT statements.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")

# --- SEG: the decision-feedback regions ---
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = CodedConcept(
    "49755003", "SCT", "Morphologically abnormal structure"
)
PATHOLOGIC_CALCIFICATION = CodedConcept("18115005", "SCT", "Pathologic calcification")

# --- ctnode's local scheme: the risk classes DICOM has no codes for ---
LOCAL_SCHEME = "99CTNODE"
RISK_CATEGORY = CodedConcept("CACCAT", LOCAL_SCHEME, "Coronary calcium risk category")
CACDRS_CATEGORY = CodedConcept("CACDRS", LOCAL_SCHEME, "CAC-DRS Agatston category")
RISK_CATEGORY_VALUES: tuple[CodedConcept, ...] = tuple(
    CodedConcept(f"CAT{i}", LOCAL_SCHEME, f"Agatston {name}")
    for i, name in enumerate(CATEGORY_NAMES)
)
CACDRS_VALUES: dict[str, CodedConcept] = {
    "A0": CodedConcept("A0", LOCAL_SCHEME, "CAC-DRS A0 (Agatston 0)"),
    "A1": CodedConcept("A1", LOCAL_SCHEME, "CAC-DRS A1 (Agatston 1-99)"),
    "A2": CodedConcept("A2", LOCAL_SCHEME, "CAC-DRS A2 (Agatston 100-299)"),
    "A3": CodedConcept("A3", LOCAL_SCHEME, "CAC-DRS A3 (Agatston 300 or more)"),
}


def local_coding_scheme() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification item that declares `99CTNODE` in an instance."""
    return CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME,
        name="ctnode coronary calcium classes",
        responsible_organization="ctnode",
    )


def same_code(item_code: Dataset, concept: CodedConcept) -> bool:
    """Whether a code sequence item (or CodedConcept) is `concept` (value and scheme)."""
    return (
        str(item_code.CodeValue) == concept.value
        and str(item_code.CodingSchemeDesignator) == concept.scheme_designator
    )
