"""The BINARY Segmentation both SEG objects are (calcium feedback, organs): one place for the
highdicom arguments they share, so the two cannot drift apart in what a PACS sees."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from node.results.equipment import MODEL_NAME, equipment
from node.results.source import copy_patient_and_study


def build_binary_seg(
    instances: Sequence[Dataset],
    pixels: np.ndarray,
    descriptions: Sequence[hd.seg.SegmentDescription],
    *,
    series_number: int,
    series_description: str,
    content_label: str,
    content_description: str,
    model_name: str = MODEL_NAME,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.seg.Segmentation:
    """A BINARY SEG on `instances` (frames in their order, empty frames left out) in a new
    series of the source study, with the source's patient and study attributes and character
    set (copy_patient_and_study). Content Description is cut to its 64 characters."""
    segmentation = hd.seg.Segmentation(
        source_images=instances,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        **equipment(model_name),
        content_label=content_label,
        content_description=content_description[:64],
        series_description=series_description,
        omit_empty_frames=True,
        specific_character_set=None,  # set by copy_patient_and_study
    )
    copy_patient_and_study(segmentation, instances[0])
    return segmentation
