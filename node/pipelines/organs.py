"""The organs pipeline: spooled CT series -> volume -> OrganSegmenter -> organ SEG in the outbox.

Same shape as node.pipelines.calcium: each stage reports its time to the job log through
`report(stage, message)`; a series that cannot be segmented raises BadSeriesError (retrying
cannot help), a missing or tampered model raises models.organs.registry.ModelFileError
(retryable once it is installed). Messages hold sizes, organ names, volumes and timings only.

The heart check. The SEG's Content Description and the job log carry the flag
`heart_not_in_field_of_view` when the segmented heart is missing or cut by the scan's ends
(models.organs.inference.heart_in_field_of_view). The calcium pipeline can use the same
evidence ([calcium] heart_check = "organs"); `SegmenterCache.segment` keeps the last result
keyed by the source instances, so when the calcium and organs jobs of one series run in the
same worker (they are made together and claimed in order) the network runs once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import SimpleITK as sitk

from node.config import Settings
from node.jobs import OutputFile
from node.pipelines.calcium import BadSeriesError, Report, SeriesFiles, read_source
from node.pipelines.outbox import write_result

if TYPE_CHECKING:
    from models.organs.inference import OrganResult, OrganSegmenter

HEART_FLAG = "heart_not_in_field_of_view"


class SegmenterCache:
    """One OrganSegmenter per worker, loaded at the first organs job (or at start when a route
    or the calcium heart check needs it); a failed load is tried again at the next job, so
    installing a model needs no restart. Also remembers the last segmentation (see the module
    docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._segmenter: OrganSegmenter | None = None
        self._last: tuple[str, OrganResult] | None = None
        self._lock = threading.Lock()

    def get(self) -> OrganSegmenter:
        from models.organs.inference import OrganSegmenter

        with self._lock:
            if self._segmenter is None:
                organs = self.settings.organs
                self._segmenter = OrganSegmenter(organs.spec_path(), device=organs.device)
            return self._segmenter

    def segment(self, ct: sitk.Image, key: str) -> tuple[OrganResult, bool]:
        """The segmentation of `ct` and whether it was the remembered one (same `key`)."""
        segmenter = self.get()
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1], True
        result = segmenter.segment(ct)
        with self._lock:
            self._last = (key, result)
        return result, False


def source_key(source: Sequence[pydicom.Dataset], ct: sitk.Image) -> str:
    """Identifies one volume of one set of instances (the memo key of SegmenterCache)."""
    digest = hashlib.sha256()
    for uid in sorted(str(ds.SOPInstanceUID) for ds in source):
        digest.update(uid.encode() + b"\0")
    digest.update(repr((ct.GetSize(), ct.GetOrigin(), ct.GetSpacing())).encode())
    return digest.hexdigest()


def heart_flags(result: OrganResult) -> list[str]:
    """[HEART_FLAG] when the segmented heart is missing or cut by the scan, else []."""
    return heart_flags_and_reason(result)[0]


def heart_flags_and_reason(result: OrganResult) -> tuple[list[str], str]:
    """heart_flags and the check's reason for the job log (e.g. "heart 12 ml < 150 ml")."""
    from models.organs.inference import heart_check

    check = heart_check(result)
    return ([] if check.in_field_of_view else [HEART_FLAG]), check.reason


def describe_volumes(volumes_ml: dict[str, float]) -> str:
    shown = [(name, ml) for name, ml in volumes_ml.items() if ml > 0]
    return ", ".join(f"{name.replace('_', ' ')} {ml:.0f} ml" for name, ml in shown) or "none"


def run(
    settings: Settings,
    job_id: int,
    files: SeriesFiles,
    segmenters: SegmenterCache,
    report: Report,
) -> list[OutputFile]:
    """Segment the series and write the organ SEG to the outbox; its row."""
    from node.results.organ_seg import build_organ_seg, present_labels
    from node.results.source import SourceSeriesError

    start = time.perf_counter()
    source, ct, notes = read_source(files, settings, purpose="organs")
    size, spacing = ct.GetSize(), ct.GetSpacing()
    report(
        "volume",
        f"{size[0]}x{size[1]}x{size[2]} voxels of {spacing[0]:.2f}x{spacing[1]:.2f}x"
        f"{spacing[2]:.2f} mm ({notes}) read in {time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    segmenters.get()
    loaded = time.perf_counter() - start
    result, reused = segmenters.segment(ct, source_key(source, ct))
    flags, why = heart_flags_and_reason(result)
    spec = result.spec
    how = (
        "reused from this series' calcium heart check"
        if reused
        else f"on {result.device} in {result.seconds:.1f} s"
    )
    report(
        "segment",
        f"{describe_volumes(result.volumes_ml)}; flags {', '.join(flags) or 'none'} ({why}); "
        f"{spec.name} {spec.version} {how}"
        + (f" (model loaded in {loaded:.1f} s)" if loaded > 0.5 else ""),
    )

    start = time.perf_counter()
    if not present_labels(result.labels):
        raise BadSeriesError(f"{spec.name} {spec.version} found no organ in this series")
    try:
        seg = build_organ_seg(source, ct, result.labels, spec.name, spec.version, flags=flags)
    except SourceSeriesError as error:
        raise BadSeriesError(str(error)) from error
    assert seg is not None  # present_labels said there is an organ
    output = write_result(Path(settings.results.outbox_dir), job_id, "seg", seg)
    report(
        "results",
        f"organ SEG ({len(seg.SegmentSequence)} segments, {int(seg.NumberOfFrames)} frames) "
        f"built and written in {time.perf_counter() - start:.1f} s",
    )
    return [output]
