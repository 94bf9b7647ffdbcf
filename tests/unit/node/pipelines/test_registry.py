"""node.pipelines.registry: every pipeline routes can name is there, under its name, and a
name it does not know fails the job with a reason that says so."""

from __future__ import annotations

import pytest

from node.config import PIPELINES, load_settings
from node.pipelines.registry import UnknownPipelineError, build, lookup


def test_every_routable_pipeline_is_registered_under_its_name() -> None:
    pipelines = build(load_settings(environ={}))
    assert sorted(pipelines) == sorted(PIPELINES)
    for name, pipeline in pipelines.items():
        assert pipeline.name == name
        assert pipeline.models_loaded() is False  # nothing loads before preload or a job


def test_calcium_and_organs_share_one_organ_segmenter() -> None:
    pipelines = build(load_settings(environ={}))
    assert pipelines["calcium"].segmenters is pipelines["organs"].segmenters


def test_an_unknown_pipeline_names_the_known_ones() -> None:
    with pytest.raises(UnknownPipelineError, match=r"no pipeline 'lungs'.*calcium, organs"):
        lookup(build(load_settings(environ={})), "lungs")
