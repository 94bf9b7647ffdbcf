"""The organs pipeline: spooled CT series -> volume -> OrganSegmenter -> organ SEG in the outbox.

Same shape as node.pipelines.calcium: each stage reports its time to the job log through
`report(stage, message)`; a series that cannot be segmented raises BadSeriesError (retrying
cannot help), a missing or tampered model raises models.organs.registry.ModelFileError
(retryable once it is installed). Messages hold sizes, organ names, volumes and timings only.

The heart check (flag `heart_not_in_field_of_view` in the SEG's Content Description and the
job log) and the worker's organ segmenter live in node.pipelines.heart_check, which the
calcium pipeline shares.
"""

from __future__ import annotations

import time
from pathlib import Path

from node.config import Settings
from node.jobs import OutputFile
from node.pipelines.heart_check import SegmenterCache, heart_flags_and_reason, source_key
from node.pipelines.outbox import write_result
from node.pipelines.protocol import Report
from node.pipelines.series_reading import BadSeriesError, SeriesFiles, read_source


def describe_volumes(volumes_ml: dict[str, float]) -> str:
    shown = [(name, ml) for name, ml in volumes_ml.items() if ml > 0]
    return ", ".join(f"{name.replace('_', ' ')} {ml:.0f} ml" for name, ml in shown) or "none"


class OrgansPipeline:
    """Segment the series and write the organ SEG to the outbox."""

    name = "organs"

    def __init__(self, settings: Settings, segmenters: SegmenterCache) -> None:
        self.settings = settings
        self.segmenters = segmenters

    def preload(self) -> None:
        # Only when a route makes organs jobs: the model is large, and most nodes score calcium
        # only (the calcium heart check loads it through CalciumPipeline.preload).
        if any(route.pipeline == self.name for route in self.settings.routes):
            self.segmenters.preload()

    def models_loaded(self) -> bool:
        return self.segmenters.loaded()

    def run(self, job_id: int, files: SeriesFiles, report: Report) -> list[OutputFile]:
        from node.results.organ_seg import build_organ_seg, present_labels
        from node.results.source import SourceSeriesError

        settings, segmenters = self.settings, self.segmenters
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
