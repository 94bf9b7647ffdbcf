"""Series completion and routing: each rule's refusal, completion after the timeout and a
reopened series superseding its job, on a real SQLite file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from node import jobs
from node.admin import status
from node.config import RouteSettings
from node.db import (
    DeliveryState,
    Job,
    JobState,
    Series,
    SeriesState,
    add_instance,
    utcnow,
    write_session,
)
from node.series import SeriesHeader, complete_and_route, never_routed, route_refusal

RULE = RouteSettings(name="chest", pipeline="calcium", description_exclude=("*scout*",))
GOOD = SeriesHeader("CT", ("ORIGINAL", "PRIMARY", "AXIAL"), 2.5, "Chest 2.5 B30f", "SIEMENS")


@pytest.mark.parametrize(
    ("change", "instances", "reason"),
    [
        ({}, 100, None),
        ({"modality": "MR"}, 100, "modality MR is not one of ['CT']"),
        ({"image_type": ("DERIVED", "SECONDARY", "AXIAL")}, 100, "lacks ORIGINAL/PRIMARY"),
        ({"slice_thickness_mm": 8.0}, 100, "slice thickness 8 mm outside 0.5-5 mm"),
        ({"slice_thickness_mm": None}, 100, "no Slice Thickness"),
        ({}, 10, "10 instances, fewer than 16"),
        ({"description": "Scout 1"}, 100, "description_exclude '*scout*'"),
    ],
)
def test_route_refusal_names_the_test_that_failed(
    change: dict, instances: int, reason: str | None
) -> None:
    header = SeriesHeader(**{**GOOD.__dict__, **change})
    refusal = route_refusal(RULE, header, instances)
    assert refusal == reason if reason is None else reason in refusal


def test_description_include_and_never_routed() -> None:
    rule = RouteSettings(name="r", pipeline="calcium", description_include=("*chest*",))
    assert route_refusal(rule, GOOD, 100) is None
    other = SeriesHeader(**{**GOOD.__dict__, "description": "Abdomen"})
    assert "description_include" in route_refusal(rule, other, 100)
    ours = SeriesHeader(**{**GOOD.__dict__, "manufacturer": "ctnode"})
    assert "own results" in never_routed(ours, False)
    assert "own results" in never_routed(GOOD, True)
    localizer = SeriesHeader(**{**GOOD.__dict__, "image_type": ("ORIGINAL", "LOCALIZER")})
    assert "localizer" in never_routed(localizer, False)
    assert never_routed(GOOD, False) is None


# --- completion and routing on a database ---------------------------------------------------


def with_organs_rule(settings):
    """The embedded routes plus the organs rule config.toml offers commented out."""
    import dataclasses

    organs = RouteSettings("chest-ct-organs", "organs")
    return dataclasses.replace(settings, routes=(*settings.routes, organs))


def calcium_only(settings):
    """The routes less any organs rule: one job per series, for the lifecycle tests."""
    import dataclasses

    routes = tuple(r for r in settings.routes if r.pipeline == "calcium")
    return dataclasses.replace(settings, routes=routes)


def _receive(settings, sessions, series: str, count: int, *, at=None, start: int = 0, **tags):
    """Spool `count` small CT headers of one series and record them as received."""
    for i in range(start, start + count):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{i + 1}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", series, "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "2.5"
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        relative = f"1.2.3/{series}/{ds.SOPInstanceUID}.dcm"
        path = Path(settings.storage.spool_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        with write_session(sessions) as session:
            add_instance(
                session,
                study_uid="1.2.3",
                series_uid=series,
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=ExplicitVRLittleEndian,
                modality="CT",
                instance_number=i + 1,
                path=relative,
                size_bytes=path.stat().st_size,
                sender_ae="STORESCU",
                received_at=at,
            )


def test_completion_waits_for_the_timeout_then_routes(node) -> None:
    settings, sessions = node
    _receive(settings, sessions, "1.2.3.4", 20)
    assert complete_and_route(settings, sessions) == []  # still within complete_after_s
    _receive(settings, sessions, "1.2.3.5", 20, at=utcnow() - timedelta(seconds=6))
    _receive(settings, sessions, "1.2.3.6", 20, at=utcnow() - timedelta(seconds=6), Modality="MR")
    # With the organs rule a site adds, a chest CT gets a calcium job and an organs job.
    settings = with_organs_rule(settings)
    made = complete_and_route(settings, sessions)
    with sessions() as session:
        states = {s.series_uid: s.state for s in session.query(Series)}
        assert states == {
            "1.2.3.4": SeriesState.RECEIVING,
            "1.2.3.5": SeriesState.ROUTED,
            "1.2.3.6": SeriesState.IGNORED,
        }
        assert [session.get(Job, job_id).pipeline for job_id in made] == ["calcium", "organs"]
        assert {session.get(Job, job_id).series.series_uid for job_id in made} == {"1.2.3.5"}
        report = status(session)
    assert report["jobs"]["queued"] == 2 and report["series"]["ignored"] == 1
    assert any("modality MR" in p["message"] for p in report["recent_problems"])


def test_a_reopened_series_supersedes_its_earlier_job(node) -> None:
    settings, sessions = node
    settings = calcium_only(settings)
    old = utcnow() - timedelta(seconds=6)
    _receive(settings, sessions, "1.2.3.7", 20, at=old)
    (first,) = complete_and_route(settings, sessions)
    assert jobs.claim_next(sessions, "w").id == first
    output = jobs.OutputFile("sr", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9.2", "1.2.9", "p", 1)
    assert jobs.finish(sessions, first, "w", [output], ["pacs"]) == JobState.SENDING
    _receive(settings, sessions, "1.2.3.7", 1, at=old, start=20)  # a late instance
    (second,) = complete_and_route(settings, sessions)
    with sessions() as session:
        job = session.get(Job, first)
        assert (job.state, job.superseded_by) == (JobState.SUPERSEDED, second)
        assert session.get(Job, second).state == JobState.QUEUED
        # The partial series' results are not sent any more.
        (delivery,) = job.deliveries
        assert delivery.state == DeliveryState.FAILED and "superseded" in delivery.last_error
