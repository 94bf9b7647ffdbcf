"""The organs pipeline on a spooled-like phantom series, and the calcium heart check that shares
its segmentation ([calcium] heart_check = "organs").

The organ model is the random-weight stand-in of tests/organ_models.py (every voxel "heart"):
a heart that fills the scan is cut by both ends, so the heart check must flag it, whatever the
shipped model would say on the phantom. One torch thread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
import torch

from models.calcium.result import CalciumResult
from models.organs.registry import ModelFileError
from node.config import load_settings
from node.pipelines.calcium import heart_check
from node.pipelines.heart_check import HEART_FLAG, SegmenterCache
from node.pipelines.organs import OrgansPipeline
from node.pipelines.series_reading import SeriesFiles, read_source
from tests.organ_models import STANDIN_NAME, write_standin
from tests.tools import dciodvfy_errors


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from models.phantoms.case import CaseOptions, generate_case
    from models.phantoms.writer import write_case

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("organs_pipeline")
    write_case(generate_case(8, 2, CaseOptions(matrix=128, n_slices=40)), root / "case", dicom=True)
    write_standin(root / "models")
    settings = load_settings(environ={})
    settings = dataclasses.replace(
        settings,
        organs=dataclasses.replace(
            settings.organs, models_dir=root / "models", model=STANDIN_NAME, device="cpu"
        ),
        calcium=dataclasses.replace(settings.calcium, heart_check="organs"),
        results=dataclasses.replace(settings.results, outbox_dir=root / "outbox"),
    )
    folder = root / "case" / "dicom"
    return settings, SeriesFiles("1.2.3", folder, sorted(folder.glob("*.dcm")))


def test_calcium_heart_check_then_organs_job_segment_once(setup) -> None:
    settings, files = setup
    segmenters = SegmenterCache(settings)
    log: list[tuple[str, str]] = []

    def report(stage: str, message: str) -> None:
        log.append((stage, message))

    source, ct, _ = read_source(files, settings)
    result = CalciumResult(0.0, {}, 0, "A0", ["too_few_slices"], [0.0, 0.0, 0.0], {}, {})
    heart_check(source, ct, result, segmenters, report)
    assert result.flags == ["too_few_slices", HEART_FLAG]
    ((stage, message),) = log
    assert stage == "heart_check" and "not in the field of view" in message

    outputs = OrgansPipeline(settings, segmenters).run(5, files, report)
    stages = dict(log[1:])
    assert list(stages) == ["volume", "segment", "results"]
    assert "reused" in stages["segment"] and HEART_FLAG in stages["segment"]
    (output,) = outputs
    assert output.kind == "seg" and output.path == "job-5/seg.dcm"
    path = Path(settings.results.outbox_dir) / output.path
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Heart"]
    assert ds.ContentDescription.startswith(HEART_FLAG)
    assert ds.SeriesInstanceUID == output.series_uid


def test_a_missing_model_is_a_model_error_not_a_bad_series(setup) -> None:
    settings, files = setup
    missing = dataclasses.replace(
        settings, organs=dataclasses.replace(settings.organs, model="no-such-model")
    )
    with pytest.raises(ModelFileError, match="no-such-model"):
        OrgansPipeline(missing, SegmenterCache(missing)).run(6, files, lambda *_: None)
