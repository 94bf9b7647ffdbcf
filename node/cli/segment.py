"""`ctnode segment PATH --out FILE`: organ segmentation of one CT, without any networking.

PATH is a DICOM folder (the stack series selection picks for organs, assembled as the node
does: node.pipelines.series_reading.read_source with purpose "organs") or a NIfTI/MHA file. The
output kind follows the name of FILE:

- `.nii.gz`, `.nii`, `.mha`, `.nrrd`: the label map (uint8 models.labels.Label values, 0 =
  background) on the CT's grid, readable by any NIfTI viewer with the label table in
  docs/phantoms.md;
- `.dcm`: the organ SEG (node.results.organ_seg), in the source study; it needs DICOM input,
  because a SEG refers to the source instances frame by frame.

The model is `[organs] model` of the configuration, or `--model NAME` (an imported model's
name or folder, `ctnode models list`); the device is `[organs] device`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import SimpleITK as sitk

from node.config import Settings

LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


class SegmentError(ValueError):
    """The request cannot be done as asked (wrong output kind for the input, unreadable input);
    the message says what to change."""


@dataclass
class SegmentReport:
    """What `ctnode segment` prints (and `--json` gives)."""

    input: str
    output: str
    kind: str  # "labelmap" or "seg"
    model: str
    version: str
    device: str
    seconds: float
    size_xyz: list[int]
    spacing_xyz: list[float]
    volumes_ml: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    segments: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def output_kind(out: Path) -> str:
    name = out.name.lower()
    if name.endswith(".dcm"):
        return "seg"
    if name.endswith(LABEL_MAP_SUFFIXES):
        return "labelmap"
    raise SegmentError(
        f"{out.name}: name the output .nii.gz (label map) or .dcm (DICOM SEG); "
        f"label maps may also be {', '.join(LABEL_MAP_SUFFIXES[1:])}"
    )


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir()


def read_input(
    path: Path, settings: Settings, need_source: bool
) -> tuple[sitk.Image, list[pydicom.Dataset] | None]:
    """The CT volume and, for a DICOM folder, its source instances."""
    from node.pipelines.series_reading import BadSeriesError, SeriesFiles, read_source

    if not path.exists():
        raise SegmentError(f"{path}: no such file or folder")
    if not is_dicom_folder(path):
        if need_source:
            raise SegmentError(
                f"{path} is not a DICOM folder: a DICOM SEG refers to the source CT instances, "
                "so --out x.dcm needs a folder of the CT series; write a label map "
                "(--out x.nii.gz) for an image file"
            )
        try:
            return sitk.ReadImage(str(path), sitk.sitkFloat32), None
        except RuntimeError as error:
            raise SegmentError(f"{path}: not a readable image ({error})") from error
    files = sorted(p for p in path.rglob("*") if p.is_file())
    try:
        folder = SeriesFiles("", path, files, all_required=False)
        source, ct, _notes = read_source(folder, settings, purpose="organs")
    except BadSeriesError as error:
        raise SegmentError(f"{path}: {error}") from error
    return ct, source


def segment_path(
    path: Path, out: Path, settings: Settings, model: str | None = None
) -> SegmentReport:
    """Segment PATH and write OUT; what was done. Raises SegmentError for a request that
    cannot work and models.files.ModelFileError for a missing model."""
    import dataclasses

    from models.organs.inference import OrganSegmenter
    from node.pipelines.heart_check import heart_flags
    from node.results.organ_seg import build_organ_seg, present_labels

    path, out = Path(path), Path(out)
    kind = output_kind(out)
    if model:
        settings = dataclasses.replace(
            settings, organs=dataclasses.replace(settings.organs, model=model)
        )
    spec_path = settings.organs.spec_path()  # a missing model fails before reading the CT
    ct, source = read_input(path, settings, need_source=kind == "seg")
    segmenter = OrganSegmenter(spec_path, device=settings.organs.device)
    start = time.perf_counter()
    result = segmenter.segment(ct)
    seconds = time.perf_counter() - start
    flags = heart_flags(result)
    spec = result.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    segments = 0
    if kind == "labelmap":
        sitk.WriteImage(sitk.Cast(result.labels, sitk.sitkUInt8), str(out), True)
        segments = len(present_labels(result.labels))
    else:
        assert source is not None
        seg = build_organ_seg(source, ct, result.labels, spec.name, spec.version, flags=flags)
        if seg is None:
            raise SegmentError(f"{spec.name} {spec.version} found no organ: no SEG written")
        seg.save_as(out, enforce_file_format=True)
        segments = len(seg.SegmentSequence)
    return SegmentReport(
        input=str(path),
        output=str(out),
        kind=kind,
        model=spec.name,
        version=spec.version,
        device=str(result.device),
        seconds=round(seconds, 2),
        size_xyz=list(ct.GetSize()),
        spacing_xyz=[round(v, 4) for v in ct.GetSpacing()],
        volumes_ml={name: round(ml, 1) for name, ml in result.volumes_ml.items()},
        flags=flags,
        segments=segments,
    )


def print_report(console, report: SegmentReport) -> None:
    """The organ volumes and what was written, as a table for a person."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"Organs: {report.input}"))
    table.add_column("organ")
    table.add_column("volume (ml)", justify="right")
    for name, ml in report.volumes_ml.items():
        if ml > 0:
            table.add_row(name.replace("_", " "), f"{ml:.1f}")
    console.print(table)
    what = "label map (uint8 Label values)" if report.kind == "labelmap" else "DICOM SEG"
    console.print(Text(f"{what} with {report.segments} segments written to {report.output}"))
    console.print(Text(f"flags: {', '.join(report.flags) or 'none'}"))
    console.print(
        Text(
            f"model {report.model} {report.version} on {report.device}, {report.seconds:.1f} s; "
            f"CT {'x'.join(map(str, report.size_xyz))} voxels"
        )
    )
    console.print("Automated segmentation from a synthetic-data model; not a diagnosis.")


def add_organ_heart_flag(result, ct: sitk.Image, heart_check: str, settings: Settings) -> None:
    """`ctnode score --heart-check organs`: segment with the [organs] model and add
    heart_not_in_field_of_view to the calcium result's flags when the heart is missing or cut
    (the node's [calcium] heart_check = "organs"). ValueError for another value than
    registration/organs; models.files.ModelFileError (a RuntimeError) without an organ model."""
    from models.organs.inference import OrganSegmenter
    from node.config import HEART_CHECKS
    from node.pipelines.heart_check import heart_flags

    if heart_check not in HEART_CHECKS:
        raise ValueError(f"--heart-check: one of {list(HEART_CHECKS)}, got {heart_check!r}")
    if heart_check == "organs":
        organs = OrganSegmenter(settings.organs.spec_path(), device=settings.organs.device)
        flags = heart_flags(organs.segment(ct))
        result.flags.extend(flag for flag in flags if flag not in result.flags)
