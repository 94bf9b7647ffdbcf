"""The calcium pipeline: spooled CT series -> volume -> CalciumScorer -> SR, SEG, SC in the outbox.

Each stage reports its time to the job log through `report(stage, message)`. Errors say what
is wrong with the series (BadSeriesError: retrying cannot help) or with the node
(ModelFileError, OSError: retrying after a fix can); they never carry patient data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import SimpleITK as sitk

from node.config import Settings

if TYPE_CHECKING:
    from models.calcium.inference import CalciumScorer
    from models.calcium.result import CalciumResult
    from node.pipelines.heart_check import SegmenterCache
from node.jobs import OutputFile
from node.pipelines.outbox import write_result

Report = Callable[[str, str], None]


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


class ScorerCache:
    """One CalciumScorer per worker, loaded when the worker starts (torch and the weights take
    a few seconds and about half a GB; a node that only receives, [worker] enabled = false,
    never pays for them). A load that failed is tried again at the next job, so installing the
    weights needs no restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._scorer: CalciumScorer | None = None
        self._lock = threading.Lock()

    def get(self) -> CalciumScorer:
        from models.calcium.inference import CalciumScorer

        with self._lock:
            if self._scorer is None:
                calcium = self.settings.calcium
                self._scorer = CalciumScorer(calcium.weights_path(), device=calcium.device)
            return self._scorer

    def loaded(self) -> bool:
        """Whether the model is loaded (the health check's `model`)."""
        return self._scorer is not None


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


def heart_check(
    source: list[pydicom.Dataset],
    ct: sitk.Image,
    result: CalciumResult,
    segmenters: SegmenterCache,
    report: Report,
) -> None:
    """Add the organ-based heart flag to `result.flags` (the SR and the overlay show it)."""
    from node.pipelines.heart_check import heart_flags_and_reason, source_key

    start = time.perf_counter()
    organs, reused = segmenters.segment(ct, source_key(source, ct))
    flags, why = heart_flags_and_reason(organs)
    result.flags.extend(flag for flag in flags if flag not in result.flags)
    how = "remembered" if reused else f"on {organs.device} in {organs.seconds:.1f} s"
    report(
        "heart_check",
        f"organ segmentation ({organs.spec.name} {organs.spec.version}, {how}): heart "
        f"{'not ' if flags else ''}in the field of view ({why}); "
        f"{time.perf_counter() - start:.1f} s",
    )


def score_summary(result: CalciumResult) -> str:
    """The score as the job log shows it: no risk category where the result is indeterminate,
    and a measured number that cannot be trusted marked as not valid."""
    flags = ", ".join(result.flags) or "none"
    if not result.scored:
        blood = (result.contrast or {}).get("blood_pool_hu")
        measured = "" if blood is None else f", blood pool {blood:.0f} HU"
        return f"not scorable: contrast-enhanced{measured}; category indeterminate; flags {flags}"
    if result.indeterminate:
        return (
            f"Agatston {result.agatston_total:.1f} NOT VALID (measured; untrusted: "
            f"{', '.join(result.untrusted_flags)}), category indeterminate, CAC-DRS "
            f"indeterminate; flags {flags}"
        )
    return (
        f"Agatston {result.agatston_total:.1f}, category {result.category_name}, CAC-DRS "
        f"{result.cacdrs}, flags {flags}"
    )


def run(
    settings: Settings,
    job_id: int,
    files: SeriesFiles,
    scorers: ScorerCache,
    report: Report,
    segmenters: SegmenterCache | None = None,
) -> list[OutputFile]:
    """Score the series and write the result objects to the outbox; their rows.

    With [calcium] heart_check = "organs" (and `segmenters`), the organ segmentation adds the
    quality flag heart_not_in_field_of_view when the heart is missing or cut (node.pipelines.
    organs; the segmentation is remembered for the series' organs job)."""
    from node.results.capture import build_overlay_capture
    from node.results.seg import build_feedback_seg
    from node.results.source import SourceSeriesError
    from node.results.sr import build_calcium_sr

    start = time.perf_counter()
    source, ct, notes = read_source(files, settings)
    size, spacing = ct.GetSize(), ct.GetSpacing()
    report(
        "volume",
        f"{size[0]}x{size[1]}x{size[2]} voxels of {spacing[0]:.2f}x{spacing[1]:.2f}x"
        f"{spacing[2]:.2f} mm ({notes}) read in {time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    scorer = scorers.get()
    loaded = time.perf_counter() - start
    result = scorer.score(ct)
    if settings.calcium.heart_check == "organs" and segmenters is not None:
        heart_check(source, ct, result, segmenters, report)
    report(
        "score",
        f"{score_summary(result)}; {result.model} on {result.device} in {result.seconds:.1f} s"
        + (f" (model loaded in {loaded:.1f} s)" if loaded > 0.5 else ""),
    )

    start = time.perf_counter()
    outbox = Path(settings.results.outbox_dir)
    try:
        objects = [("sr", build_calcium_sr(source, result))]
        # A series that was not scored has no calcium to show.
        seg = build_feedback_seg(source, ct, result) if result.scored else None
        if seg is not None:
            objects.append(("seg", seg))
        if settings.results.secondary_capture:
            objects.append(("capture", build_overlay_capture(source, ct, result)))
    except SourceSeriesError as error:
        raise BadSeriesError(str(error)) from error
    outputs = [write_result(outbox, job_id, kind, dataset) for kind, dataset in objects]
    if seg is not None:
        no_seg = ""
    elif not result.scored:
        no_seg = " (no SEG: not scored)"
    else:
        no_seg = " (no SEG: no feedback region above the threshold)"
    report(
        "results",
        f"{', '.join(kind for kind, _ in objects)} built and written in "
        f"{time.perf_counter() - start:.1f} s{no_seg}",
    )
    return outputs
