"""The calcium pipeline: spooled CT series -> volume -> CalciumScorer -> SR, SEG, SC in the outbox.

Each stage reports its time to the job log through `report(stage, message)`. Errors say what
is wrong with the series (BadSeriesError: retrying cannot help) or with the node
(ModelFileError, OSError: retrying after a fix can); they never carry patient data.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import SimpleITK as sitk

from models.calcium.result import EXCESS_NOISE_FLAG
from node.config import Settings
from node.jobs import OutputFile
from node.pipelines.heart_check import SegmenterCache, heart_flags_and_reason, source_key
from node.pipelines.outbox import write_result
from node.pipelines.protocol import Report
from node.pipelines.series_reading import BadSeriesError, SeriesFiles, read_source

if TYPE_CHECKING:
    from models.calcium.inference import CalciumScorer
    from models.calcium.result import CalciumResult

LOG = logging.getLogger("ctnode.worker")


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

    def preload(self) -> None:
        """Load the model now and log how long it took, or why it is not usable."""
        from models.calcium.inference import ModelFileError

        start = time.perf_counter()
        try:
            scorer = self.get()
        except ModelFileError as error:
            LOG.error("calcium model not usable, jobs will fail until it is: %s", error)
            return
        LOG.info(
            "calcium model %s loaded on %s in %.1f s",
            scorer.name,
            scorer.device,
            time.perf_counter() - start,
        )


def heart_check(
    source: list[pydicom.Dataset],
    ct: sitk.Image,
    result: CalciumResult,
    segmenters: SegmenterCache,
    report: Report,
) -> None:
    """Add the organ-based heart flag to `result.flags` (the SR and the overlay show it)."""

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
        noise = (result.noise or {}).get("sd_hu") if EXCESS_NOISE_FLAG in result.flags else None
        measured = "" if noise is None else f", image noise {noise:.0f} HU"
        return (
            f"Agatston {result.agatston_total:.1f} NOT VALID (measured; untrusted: "
            f"{', '.join(result.untrusted_flags)}{measured}), category indeterminate, CAC-DRS "
            f"indeterminate; flags {flags}"
        )
    return (
        f"Agatston {result.agatston_total:.1f}, category {result.category_name}, CAC-DRS "
        f"{result.cacdrs}, flags {flags}"
    )


class CalciumPipeline:
    """Score the series and write the result objects to the outbox.

    With [calcium] heart_check = "organs", the organ segmentation adds the quality flag
    heart_not_in_field_of_view when the heart is missing or cut (node.pipelines.heart_check;
    the segmentation is remembered for the series' organs job)."""

    name = "calcium"

    def __init__(self, settings: Settings, scorers: ScorerCache, segmenters: SegmenterCache):
        self.settings = settings
        self.scorers = scorers
        self.segmenters = segmenters

    def preload(self) -> None:
        self.scorers.preload()
        if self.settings.calcium.heart_check == "organs":
            self.segmenters.preload()

    def models_loaded(self) -> bool:
        return self.scorers.loaded()

    def run(self, job_id: int, files: SeriesFiles, report: Report) -> list[OutputFile]:
        from node.results.capture import build_overlay_capture
        from node.results.seg import build_feedback_seg
        from node.results.source import SourceSeriesError
        from node.results.sr import build_calcium_sr

        settings = self.settings
        start = time.perf_counter()
        source, ct, notes = read_source(files, settings)
        size, spacing = ct.GetSize(), ct.GetSpacing()
        report(
            "volume",
            f"{size[0]}x{size[1]}x{size[2]} voxels of {spacing[0]:.2f}x{spacing[1]:.2f}x"
            f"{spacing[2]:.2f} mm ({notes}) read in {time.perf_counter() - start:.1f} s",
        )

        start = time.perf_counter()
        scorer = self.scorers.get()
        loaded = time.perf_counter() - start
        result = scorer.score(ct)
        if settings.calcium.heart_check == "organs":
            heart_check(source, ct, result, self.segmenters, report)
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
