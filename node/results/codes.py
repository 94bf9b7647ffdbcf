"""Coded concepts of ctnode's result objects (SR, SEG), in one place.

The SR concepts follow the contract in DESIGN.md ("Contracts"); the SNOMED CT and DCM codes are
the ones listed in REFERENCE.md section 3. Where DICOM has no standard code (the five-class risk
category and CAC-DRS), ctnode uses its own local coding scheme `99CTNODE` (PS3.16 8.2: designators
starting with "99" are private) and names it in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from models.agatston import CATEGORY_NAMES
from models.labels import Label

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


# --- honest uncertainty (models/calcium/result.py: indeterminate results) ---
# The risk category and CAC-DRS of a result that cannot be trusted: SNOMED CT's qualifier
# value "Indeterminate" (pydicom codes.SCT.Indeterminate) as the CODE item's value.
INDETERMINATE = CodedConcept("82334004", "SCT", "Indeterminate")
# The measured score of an untrusted (but scored) result keeps its number, qualified by DICOM
# CID 42 "Numeric Value Qualifier": "Value indeterminate" (Numeric Value Qualifier Code
# Sequence, which PS3.3 C.18.1 allows to qualify a present value).
VALUE_INDETERMINATE = CodedConcept("114011", "DCM", "Value indeterminate")
# Why a series was not scored. No standard concept says "not scorable" (DCM 122086 "Contrast
# administered" is a procedure-log event of TID 3100, not a finding about an image), so the
# statement is coded in the local scheme: NOTSCORABLE = CONTRAST reads "Not scorable:
# contrast-enhanced".
NOT_SCORABLE = CodedConcept("NOTSCORABLE", LOCAL_SCHEME, "Not scorable")
NOT_SCORABLE_REASONS: dict[str, CodedConcept] = {
    "contrast_enhanced": CodedConcept("CONTRAST", LOCAL_SCHEME, "Contrast-enhanced"),
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


# --- SEG: organs (node.results.organ_seg) ---
# Segmentation property category (DICOM CID 7150): every organ segment is an anatomical
# structure; the coronary and valve calcifications a fine-tuned model may add are
# morphologically abnormal structures (as in the calcium feedback SEG), the table a physical
# object. Property types (CID 7151/7166) are SNOMED CT concepts from pydicom's code dictionary
# (`pydicom.sr.codedict.codes.SCT`) where it has them; the left/right lung and kidney codes
# (not in that dictionary) are the SNOMED CT "left/right ... structure" concepts used for them
# by DICOM SEG writers (dcmqi, TotalSegmentator). Paired structures without a sided concept in
# the dictionary (adrenal glands, psoas major) carry the generic concept with a laterality
# modifier (SCT 7771000 Left / 24028007 Right), as DICOM does for sided anatomy. The psoas
# major has no concept in pydicom's dictionary, so it is coded as skeletal muscle + side, with
# the specific name in the segment label.
ANATOMICAL_STRUCTURE = CodedConcept("91723000", "SCT", "Anatomical Structure")
ORGAN = CodedConcept("91772007", "SCT", "Organ")  # REFERENCE.md section 3
PHYSICAL_OBJECT = CodedConcept("260787004", "SCT", "Physical object")
LEFT = CodedConcept("7771000", "SCT", "Left")
RIGHT = CodedConcept("24028007", "SCT", "Right")


@dataclass(frozen=True)
class OrganCode:
    """How one Label is coded in the organ SEG: category, property type, optional laterality
    modifier, optional anatomic region (where the type alone does not say where)."""

    category: CodedConcept
    type: CodedConcept
    modifier: CodedConcept | None = None
    region: CodedConcept | None = None


def _anatomy(value: str, meaning: str, modifier: CodedConcept | None = None) -> OrganCode:
    return OrganCode(ANATOMICAL_STRUCTURE, CodedConcept(value, "SCT", meaning), modifier)


def _calcification(region: CodedConcept) -> OrganCode:
    """Pathologic calcification of a structure (category: morphologically abnormal structure)."""
    return OrganCode(MORPHOLOGICALLY_ABNORMAL_STRUCTURE, PATHOLOGIC_CALCIFICATION, region=region)


ORGAN_CODES: dict[Label, OrganCode] = {
    Label.AORTA: _anatomy("15825003", "Aorta"),
    Label.BLADDER: _anatomy("89837001", "Bladder"),
    Label.DUODENUM: _anatomy("38848004", "Duodenum"),
    Label.GALLBLADDER: _anatomy("28231008", "Gallbladder"),
    Label.HEART: _anatomy("80891009", "Heart"),
    Label.INFERIOR_VENA_CAVA: _anatomy("64131007", "Inferior vena cava"),
    Label.LEFT_ADRENAL: _anatomy("23451007", "Adrenal gland", LEFT),
    Label.LEFT_KIDNEY: _anatomy("18639004", "Left kidney"),
    Label.LEFT_LUNG: _anatomy("44029006", "Left lung"),
    Label.LEFT_PSOAS_MAJOR: _anatomy("127954009", "Skeletal muscle", LEFT),
    Label.LIVER: _anatomy("10200004", "Liver"),
    Label.PANCREAS: _anatomy("15776009", "Pancreas"),
    # One label for the portal and splenic veins; coded by its larger part.
    Label.PORTAL_SPLENIC_VEIN: _anatomy("32764006", "Portal vein"),
    Label.RIGHT_ADRENAL: _anatomy("23451007", "Adrenal gland", RIGHT),
    Label.RIGHT_KIDNEY: _anatomy("9846003", "Right kidney"),
    Label.RIGHT_LUNG: _anatomy("3341006", "Right lung"),
    Label.RIGHT_PSOAS_MAJOR: _anatomy("127954009", "Skeletal muscle", RIGHT),
    Label.SPINAL_CORD: _anatomy("2748008", "Spinal cord"),
    Label.SPLEEN: _anatomy("78961009", "Spleen"),
    Label.STERNUM: _anatomy("56873002", "Sternum"),
    Label.STOMACH: _anatomy("69695003", "Stomach"),
    Label.TRACHEA: _anatomy("44567001", "Trachea"),
    Label.VERTEBRAE: _anatomy("51282000", "Vertebra"),
    Label.RIBS: _anatomy("113197003", "Rib"),
    Label.ESOPHAGUS: _anatomy("32849002", "Esophagus"),
    Label.SUBCUTANEOUS_FAT: _anatomy("71966008", "Subcutaneous tissue"),
    Label.MUSCLE: _anatomy("127954009", "Skeletal muscle"),
    Label.EPICARDIAL_FAT: OrganCode(
        ANATOMICAL_STRUCTURE,
        CodedConcept("256674009", "SCT", "Fat"),
        region=CodedConcept("80891009", "SCT", "Heart"),
    ),
    Label.CORONARY_ARTERY: _anatomy("41801008", "Coronary artery"),
    Label.PULMONARY_VESSELS: OrganCode(
        ANATOMICAL_STRUCTURE,
        CodedConcept("59820001", "SCT", "Blood vessel"),
        region=CodedConcept("39607008", "SCT", "Lung"),
    ),
    Label.MAIN_BRONCHI: _anatomy("955009", "Bronchus"),
    Label.SPINAL_CANAL: _anatomy("61853006", "Vertebral canal"),
    Label.CAC_LEFT_MAIN: _calcification(
        CodedConcept("3227004", "SCT", "Left main coronary artery")
    ),
    Label.CAC_LAD: _calcification(ARTERY_SITES["LAD"]),
    Label.CAC_LCX: _calcification(ARTERY_SITES["LCX"]),
    Label.CAC_RCA: _calcification(ARTERY_SITES["RCA"]),
    Label.AORTIC_WALL_CALCIFICATION: _calcification(CodedConcept("15825003", "SCT", "Aorta")),
    Label.AORTIC_VALVE_CALCIFICATION: _calcification(
        CodedConcept("34202007", "SCT", "Aortic valve")
    ),
    Label.MITRAL_ANNULUS_CALCIFICATION: _calcification(
        CodedConcept("91134007", "SCT", "Mitral valve")
    ),
    Label.LYMPH_NODE_CALCIFICATION: _calcification(CodedConcept("59441001", "SCT", "Lymph node")),
    Label.AIRWAY_CARTILAGE_CALCIFICATION: _calcification(
        CodedConcept("44567001", "SCT", "Trachea")
    ),
    Label.LUNG_GRANULOMA_CALCIFICATION: _calcification(CodedConcept("39607008", "SCT", "Lung")),
    Label.PATIENT_TABLE: OrganCode(PHYSICAL_OBJECT, CodedConcept("86407004", "SCT", "Table")),
    Label.DEVICE: OrganCode(PHYSICAL_OBJECT, CodedConcept("40388003", "SCT", "Implant")),
}
