"""The pipelines a job can name (name -> pipeline), made once per worker.

Adding a pipeline: a class satisfying node.pipelines.protocol.Pipeline, one line in `build`,
and its name in node.config.PIPELINES (which routes are checked against; a unit test keeps the
two equal).
"""

from __future__ import annotations

from node.config import Settings
from node.pipelines.calcium import CalciumPipeline, ScorerCache
from node.pipelines.heart_check import SegmenterCache
from node.pipelines.organs import OrgansPipeline
from node.pipelines.protocol import Pipeline


class UnknownPipelineError(LookupError):
    """A job names a pipeline this version of ctnode does not have (a newer node made it)."""


def build(settings: Settings) -> dict[str, Pipeline]:
    """One of each pipeline for a worker. They share the organ segmenter, so the calcium heart
    check and the organs job of one series segment it once (node.pipelines.heart_check)."""
    segmenters = SegmenterCache(settings)
    pipelines: list[Pipeline] = [
        CalciumPipeline(settings, ScorerCache(settings), segmenters),
        OrgansPipeline(settings, segmenters),
    ]
    return {pipeline.name: pipeline for pipeline in pipelines}


def lookup(pipelines: dict[str, Pipeline], name: str) -> Pipeline:
    """The pipeline called `name`; UnknownPipelineError says which ones there are."""
    try:
        return pipelines[name]
    except KeyError:
        known = ", ".join(sorted(pipelines))
        raise UnknownPipelineError(
            f"no pipeline {name!r} in this version of ctnode (it has: {known})"
        ) from None
