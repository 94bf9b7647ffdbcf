"""The decision-feedback regions as a DICOM Segmentation (BINARY), one segment per artery.

Each segment holds the voxels that carry an artery's score (node.results.regions: feedback
density >= 0.01 AU/mm^3), coded as a pathologic calcification (SNOMED CT, category
"Morphologically abnormal structure") in the artery (anatomic region: LAD, which includes the
left main, LCX or RCA). Frames sit exactly on the source CT frames: frame i of the pixel array
handed to highdicom is the mask of the volume slice that source instance i holds, whatever the
instances' order and the patient position (head- or feet-first), and highdicom copies the
source planes and references the source instances frame by frame.

Empty frames are left out (highdicom's omit_empty_frames), so the object holds only slices
with a region. Segments are written only for arteries that have a region, numbered from 1 in
the order LAD, LCX, RCA: every segment in the object is backed by pixels. When no artery has a
region (a score of 0, or a map below the threshold everywhere) no SEG is produced at all:
`build_feedback_seg` returns None, and the SR and the Secondary Capture say that the score is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from models.calcium.result import CalciumResult
from node.results import codes as rc
from node.results.binary_seg import build_binary_seg
from node.results.equipment import algorithm_identity
from node.results.regions import MIN_DENSITY_AU_PER_MM3, feedback_regions
from node.results.source import check_series, slice_indices

SEG_SERIES_NUMBER = 9002
SERIES_DESCRIPTION = "ctnode calcium feedback SEG - automated, not a diagnosis"
SEGMENT_LABELS = {
    "LAD": "LAD calcium (incl. left main)",
    "LCX": "LCX calcium",
    "RCA": "RCA calcium",
}
# Display colours (CIELab via sRGB) matching the Secondary Capture overlay.
SEGMENT_RGB = {"LAD": (213, 94, 0), "LCX": (86, 180, 233), "RCA": (240, 228, 66)}


def build_feedback_seg(
    source: Sequence[Dataset],
    ct: sitk.Image,
    result: CalciumResult,
    *,
    min_density_au_per_mm3: float = MIN_DENSITY_AU_PER_MM3,
    series_number: int = SEG_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.seg.Segmentation | None:
    """A BINARY Segmentation of the feedback regions on the source series' frames, in the
    source study; None when there is no region to show (see the module docstring)."""
    instances = check_series(source)
    order = slice_indices(instances, ct)
    regions = feedback_regions(result, ct, min_density_au_per_mm3)
    arteries = [artery for artery, mask in regions.items() if mask.any()]
    if not arteries:
        return None
    # (frames in source order, rows, columns, segments); frame i is source instance i's slice.
    pixels = np.stack([regions[artery][order] for artery in arteries], axis=-1)
    name, model_version = algorithm_identity(result)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, version=model_version, family=rc.ALGORITHM_FAMILY_AI
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=SEGMENT_LABELS[artery],
            segmented_property_category=rc.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=rc.PATHOLOGIC_CALCIFICATION,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"{artery} calcium feedback",
            anatomic_regions=[rc.ARTERY_SITES[artery]],
            display_color=hd.color.CIELabColor.from_rgb(*SEGMENT_RGB[artery]),
        )
        for number, artery in enumerate(arteries, start=1)
    ]
    return build_binary_seg(
        instances,
        pixels,
        descriptions,
        series_number=series_number,
        series_description=SERIES_DESCRIPTION,
        content_label="CALCIUM",
        content_description=(
            f"Voxels carrying the coronary calcium score (feedback >= "
            f"{min_density_au_per_mm3:g} AU/mm3); automated, not a diagnosis"
        ),
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
    )
