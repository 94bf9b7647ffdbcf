"""Reading a job's series: the spooled instance files -> the chosen CT stack's instances and
its assembled volume (node.volume's planning and assembly). Every pipeline and `ctnode segment`
start here; a series that cannot be read raises BadSeriesError with the reason (retrying cannot
help), never with patient data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import SimpleITK as sitk

from node.config import Settings


class BadSeriesError(ValueError):
    """The series cannot be scored as it is (too few slices, undecodable, inconsistent)."""


@dataclass(frozen=True)
class SeriesFiles:
    """What the worker hands a pipeline: the series' spool folder and its instance files (the
    database's list, recorded at receive; whatever else lies in the folder is not read)."""

    series_uid: str
    folder: Path
    paths: Sequence[Path]
    # True for the worker: each path is an instance acknowledged to its sender, so one that
    # cannot be used fails the series. False for a folder a person points the CLI at, where
    # files that are no images (a README, a DICOMDIR) are left out.
    all_required: bool = True


def read_source(
    files: SeriesFiles, settings: Settings, *, purpose: str = "calcium"
) -> tuple[list[pydicom.Dataset], sitk.Image, str]:
    """The instances of the stack chosen for `purpose` ("calcium" or "organs": its selection
    rule and its [section] min_slices), the CT volume assembled from them (node.volume's
    planning and assembly), and a line for the job log.

    Only `files.paths` are read (for a job: the database's list). With `all_required`, one
    that cannot be read as an image (gone, corrupt, pixel data that contradicts its header)
    fails the series with the reason: it was acknowledged to the sender, so leaving it out
    would hide a loss and could show up later as a misleading gap between slices."""
    from node.character_sets import CharacterSetError, check_character_set
    from node.volume.assembly import assemble
    from node.volume.geometry import AssemblyError
    from node.volume.read import plan_files
    from node.volume.selection import select_for_calcium, select_for_organs

    min_slices = getattr(settings, purpose).min_slices
    select = select_for_organs if purpose == "organs" else select_for_calcium
    if len(files.paths) < min_slices:
        raise BadSeriesError(
            f"{len(files.paths)} instances, fewer than [{purpose}] min_slices={min_slices}"
        )
    plan = plan_files(files.paths, settings.assembly, select)
    if plan.scan.unreadable and files.all_required:
        first = plan.scan.unreadable[0]
        more = len(plan.scan.unreadable) - 1
        raise BadSeriesError(
            f"instance file {first.path.name} cannot be used: {first.reason}"
            + (f" (and {more} more file(s))" if more else "")
        )
    chosen = plan.selection.chosen
    if chosen is None:
        reasons = "; ".join(f"{label}: {why}" for label, why in plan.selection.reasons.items())
        what = "organ segmentation" if purpose == "organs" else "calcium scoring"
        raise BadSeriesError(f"no CT stack suitable for {what} ({reasons or 'none'})")
    try:
        assembled = assemble(chosen, settings.assembly.missing_slices)
    except AssemblyError as error:
        raise BadSeriesError(f"stack {chosen.label} cannot be assembled: {error}") from error
    ct = sitk.Cast(assembled.image, sitk.sitkFloat32)
    for key in assembled.image.GetMetaDataKeys():
        ct.SetMetaData(key, assembled.image.GetMetaData(key))
    if ct.GetSize()[2] < min_slices:
        raise BadSeriesError(f"{ct.GetSize()[2]} slices, fewer than {min_slices}")
    source = []
    for path in sorted({frame.path for frame in chosen.frames}):
        try:
            dataset = pydicom.dcmread(path)
        except Exception as error:  # noqa: BLE001 - whatever a corrupt file makes pydicom raise
            raise BadSeriesError(
                f"instance file {path.name} cannot be read ({type(error).__name__})"
            ) from error
        try:
            check_character_set(dataset)
        except CharacterSetError as error:
            raise BadSeriesError(f"instance file {path.name}: {error}") from error
        source.append(dataset)
    left_out = len(files.paths) - len(source)
    notes = [f"stack {chosen.label}"]
    if left_out:
        notes.append(
            f"{left_out} instance(s) left out: "
            + "; ".join(f"{e.count} {e.reason}" for e in plan.scan.excluded)
        )
    notes.extend(assembled.notes)
    return source, ct, ", ".join(notes)
