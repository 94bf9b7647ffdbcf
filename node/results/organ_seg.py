"""The organ segmentation as a DICOM Segmentation (BINARY), one segment per organ present.

Input is a label map on the CT volume's grid (`models.labels.Label` values, 0 = background), as
`models.organs.inference.OrganSegmenter` returns it. Each Label value that occurs becomes one
segment, numbered from 1 in Label order, coded with SNOMED CT (node.results.codes.ORGAN_CODES:
category Anatomical Structure, the organ as property type, laterality as a modifier where the
type has no side), labelled in plain words ("Left lung"), with a recommended display colour and
the model's name and version as the algorithm identification. A model's channel that found
nothing gets no segment, so every segment in the object is backed by pixels; a label map
without any organ gives no SEG at all (None).

Frames sit on the source CT frames exactly as in the calcium feedback SEG (node.results.seg):
frame i of the array handed to highdicom is the volume slice that source instance i holds,
whatever the arrival order and patient position, and empty frames are omitted. BINARY rather
than FRACTIONAL or LABELMAP: the label map is already a hard decision per voxel, and BINARY is
what every SEG-capable viewer of today reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from models.labels import Label
from node.results import codes as rc
from node.results.binary_seg import build_binary_seg
from node.results.source import (
    SourceSeriesError,
    check_series,
    slice_indices,
)

ORGAN_SEG_SERIES_NUMBER = 9004  # after SR 9001, feedback SEG 9002, Secondary Capture 9003
MODEL_NAME = "ctnode organ segmentation"
SERIES_DESCRIPTION = "ctnode organs SEG - automated, not a diagnosis"
GEOMETRY_TOLERANCE_MM = 1e-3

# Segment labels in plain words (what a viewer lists); anything missing: the Label's name.
SEGMENT_NAMES: dict[Label, str] = {
    Label.AORTA: "Aorta",
    Label.BLADDER: "Urinary bladder",
    Label.DUODENUM: "Duodenum",
    Label.GALLBLADDER: "Gallbladder",
    Label.HEART: "Heart",
    Label.INFERIOR_VENA_CAVA: "Inferior vena cava",
    Label.LEFT_ADRENAL: "Left adrenal gland",
    Label.LEFT_KIDNEY: "Left kidney",
    Label.LEFT_LUNG: "Left lung",
    Label.LEFT_PSOAS_MAJOR: "Left psoas major muscle",
    Label.LIVER: "Liver",
    Label.PANCREAS: "Pancreas",
    Label.PORTAL_SPLENIC_VEIN: "Portal and splenic vein",
    Label.RIGHT_ADRENAL: "Right adrenal gland",
    Label.RIGHT_KIDNEY: "Right kidney",
    Label.RIGHT_LUNG: "Right lung",
    Label.RIGHT_PSOAS_MAJOR: "Right psoas major muscle",
    Label.SPINAL_CORD: "Spinal cord",
    Label.SPLEEN: "Spleen",
    Label.STERNUM: "Sternum",
    Label.STOMACH: "Stomach",
    Label.TRACHEA: "Trachea",
    Label.VERTEBRAE: "Vertebrae",
    Label.RIBS: "Ribs",
    Label.ESOPHAGUS: "Esophagus",
    Label.SUBCUTANEOUS_FAT: "Subcutaneous fat",
    Label.MUSCLE: "Skeletal muscle",
    Label.EPICARDIAL_FAT: "Epicardial fat",
    Label.CORONARY_ARTERY: "Coronary arteries",
    Label.PULMONARY_VESSELS: "Pulmonary vessels",
    Label.MAIN_BRONCHI: "Main bronchi",
    Label.SPINAL_CANAL: "Spinal canal",
    Label.CAC_LEFT_MAIN: "Left main calcium",
    Label.CAC_LAD: "LAD calcium",
    Label.CAC_LCX: "LCX calcium",
    Label.CAC_RCA: "RCA calcium",
    Label.AORTIC_WALL_CALCIFICATION: "Aortic wall calcification",
    Label.AORTIC_VALVE_CALCIFICATION: "Aortic valve calcification",
    Label.MITRAL_ANNULUS_CALCIFICATION: "Mitral annulus calcification",
    Label.LYMPH_NODE_CALCIFICATION: "Lymph node calcification",
    Label.AIRWAY_CARTILAGE_CALCIFICATION: "Tracheal cartilage calcification",
    Label.LUNG_GRANULOMA_CALCIFICATION: "Calcified lung granuloma",
    Label.PATIENT_TABLE: "Patient table",
    Label.DEVICE: "Implanted device",
}

# Recommended display colours (sRGB, written as CIELab), close to 3D Slicer's anatomy colours
# so that a radiologist sees familiar ones; neighbours (heart/aorta, lungs/trachea) differ.
SEGMENT_RGB: dict[Label, tuple[int, int, int]] = {
    Label.AORTA: (224, 97, 76),
    Label.BLADDER: (222, 154, 132),
    Label.DUODENUM: (255, 253, 229),
    Label.GALLBLADDER: (139, 150, 98),
    Label.HEART: (206, 110, 84),
    Label.INFERIOR_VENA_CAVA: (0, 151, 206),
    Label.LEFT_ADRENAL: (249, 186, 150),
    Label.LEFT_KIDNEY: (185, 102, 83),
    Label.LEFT_LUNG: (172, 138, 115),
    Label.LEFT_PSOAS_MAJOR: (170, 98, 81),
    Label.LIVER: (221, 130, 101),
    Label.PANCREAS: (249, 180, 111),
    Label.PORTAL_SPLENIC_VEIN: (0, 112, 165),
    Label.RIGHT_ADRENAL: (244, 170, 147),
    Label.RIGHT_KIDNEY: (202, 120, 98),
    Label.RIGHT_LUNG: (197, 165, 145),
    Label.RIGHT_PSOAS_MAJOR: (192, 104, 88),
    Label.SPINAL_CORD: (244, 214, 49),
    Label.SPLEEN: (157, 108, 162),
    Label.STERNUM: (241, 214, 145),
    Label.STOMACH: (216, 132, 105),
    Label.TRACHEA: (182, 228, 255),
    Label.VERTEBRAE: (255, 255, 207),
    Label.RIBS: (253, 232, 158),
    Label.ESOPHAGUS: (211, 171, 143),
    Label.SUBCUTANEOUS_FAT: (230, 220, 70),
    Label.MUSCLE: (192, 104, 88),
    Label.EPICARDIAL_FAT: (255, 225, 120),
    Label.CORONARY_ARTERY: (255, 0, 0),
    Label.PULMONARY_VESSELS: (0, 145, 30),
    Label.MAIN_BRONCHI: (140, 200, 240),
    Label.SPINAL_CANAL: (200, 200, 235),
    Label.CAC_LEFT_MAIN: (213, 94, 0),
    Label.CAC_LAD: (213, 94, 0),
    Label.CAC_LCX: (86, 180, 233),
    Label.CAC_RCA: (240, 228, 66),
    Label.AORTIC_WALL_CALCIFICATION: (255, 255, 255),
    Label.AORTIC_VALVE_CALCIFICATION: (230, 230, 230),
    Label.MITRAL_ANNULUS_CALCIFICATION: (210, 210, 210),
    Label.LYMPH_NODE_CALCIFICATION: (200, 200, 160),
    Label.AIRWAY_CARTILAGE_CALCIFICATION: (190, 220, 240),
    Label.LUNG_GRANULOMA_CALCIFICATION: (245, 245, 200),
    Label.PATIENT_TABLE: (128, 128, 128),
    Label.DEVICE: (160, 160, 255),
}


def segment_name(label: Label) -> str:
    return SEGMENT_NAMES.get(label, label.name.replace("_", " ").capitalize())


def present_labels(labels: sitk.Image) -> list[Label]:
    """The Label values that occur in the label map (background left out), in Label order;
    ValueError for a value that is not a Label."""
    values = np.unique(sitk.GetArrayViewFromImage(labels))
    known = {int(label) for label in Label}
    unknown = sorted(int(v) for v in values if int(v) not in known)
    if unknown:
        raise ValueError(f"label map holds values that are not models.labels.Label: {unknown}")
    return [Label(int(v)) for v in values if int(v) != Label.BACKGROUND]


def check_same_grid(labels: sitk.Image, ct: sitk.Image) -> None:
    """The label map must be on the CT volume's grid (it is drawn onto the CT's frames)."""
    if labels.GetSize() != ct.GetSize():
        raise SourceSeriesError(f"label map size {labels.GetSize()} != CT size {ct.GetSize()}")
    for name in ("Origin", "Spacing", "Direction"):
        a, b = (np.asarray(getattr(image, f"Get{name}")()) for image in (labels, ct))
        if not np.allclose(a, b, atol=GEOMETRY_TOLERANCE_MM):
            raise SourceSeriesError(f"label map {name.lower()} differs from the CT volume's")


def segment_description(
    number: int, label: Label, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    code = rc.ORGAN_CODES[label]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment_name(label),
        segmented_property_category=code.category,
        segmented_property_type=code.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=segment_name(label),
        anatomic_regions=[code.region] if code.region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*SEGMENT_RGB[label]),
    )
    if code.modifier is not None:
        # Segmented Property Type Modifier Code Sequence (0062,0011): the side of a paired
        # structure whose type concept has none (highdicom has no argument for it).
        modifier = Dataset()
        modifier.CodeValue = code.modifier.value
        modifier.CodingSchemeDesignator = code.modifier.scheme_designator
        modifier.CodeMeaning = code.modifier.meaning
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        type_item.SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def build_organ_seg(
    source: Sequence[Dataset],
    ct: sitk.Image,
    labels: sitk.Image,
    algorithm_name: str,
    algorithm_version: str,
    *,
    flags: Sequence[str] = (),
    series_number: int = ORGAN_SEG_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.seg.Segmentation | None:
    """A BINARY Segmentation of the organs in `labels` on the source series' frames, in the
    source study; None when the label map holds no organ. `flags` (e.g.
    heart_not_in_field_of_view) are named in the Content Description."""
    instances = check_series(source)
    check_same_grid(labels, ct)
    order = slice_indices(instances, ct)
    present = present_labels(labels)
    if not present:
        return None
    # Label value -> segment number; frames in source order, each the slice its instance holds.
    lookup = np.zeros(256, np.uint8)
    for number, label in enumerate(present, start=1):
        lookup[int(label)] = number
    pixels = lookup[sitk.GetArrayViewFromImage(labels)[order]]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=rc.ALGORITHM_FAMILY_AI
    )
    descriptions = [
        segment_description(number, label, algorithm)
        for number, label in enumerate(present, start=1)
    ]
    what = f"{len(present)} organs by {algorithm_name} {algorithm_version}"
    # Flags first: Content Description is 64 characters at most.
    content = f"{', '.join(flags)}; {what}" if flags else f"{what}; automated, not a diagnosis"
    return build_binary_seg(
        instances,
        pixels,
        descriptions,
        series_number=series_number,
        series_description=SERIES_DESCRIPTION,
        content_label="ORGANS",
        content_description=content,
        model_name=MODEL_NAME,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
    )
