"""Routing rules, the send retry policy, completion and the job queue on a real SQLite file."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from node import jobs
from node.admin import parse_since, show_job, status, timeline
from node.config import ConfigError, RouteSettings, load_settings
from node.db import (
    DeliveryState,
    Job,
    JobState,
    Series,
    SeriesState,
    add_instance,
    init_db,
    make_session_factory,
    utcnow,
    write_session,
)
from node.send import Outcome, classify_status
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


def test_routes_from_a_site_file_and_their_checks(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[routes]]\nname = "thin"\npipeline = "calcium"\nmax_slice_thickness_mm = 3.0\n'
        'description_include = ["*chest*"]\n'
    )
    (route,) = load_settings(site, environ={}).routes
    assert route.max_slice_thickness_mm == 3.0 and route.description_include == ("*chest*",)
    assert route.modalities == ("CT",)  # the defaults of a rule
    site.write_text('[[routes]]\nname = "x"\npipeline = "organs-v9"\n')
    with pytest.raises(ConfigError, match="pipeline"):
        load_settings(site, environ={})


def test_organs_rule_is_commented_out_of_the_defaults_and_valid_when_a_site_adds_it(
    tmp_path: Path,
) -> None:
    """The shipped organ model does not segment yet, so the embedded defaults route calcium
    only; the organs rule in config.toml, uncommented into a site file, is a valid rule."""
    assert [r.pipeline for r in load_settings(environ={}).routes] == ["calcium"]
    text = (Path(__file__).resolve().parents[3] / "config.toml").read_text()
    calcium = text[text.index("\n[[routes]]\n") : text.index("# Organ segmentation is not routed")]
    block = text[text.index('# [[routes]]\n# name = "chest-ct-organs"') :]
    organs = [line[2:] for line in block.splitlines()[:10]]
    site = tmp_path / "site.toml"
    site.write_text(calcium + "\n".join(organs) + "\n")
    routes = load_settings(site, environ={}).routes
    assert [(r.name, r.pipeline) for r in routes] == [
        ("chest-ct-calcium", "calcium"),
        ("chest-ct-organs", "organs"),
    ]
    assert routes[1].description_exclude == routes[0].description_exclude
    site.write_text('[[routes]]\nname = "x"\npipeline = "calcium"\nmodalities = "CT"\n')
    with pytest.raises(ConfigError, match="modalities"):
        load_settings(site, environ={})


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.SENT),
        (0xB000, Outcome.SENT),  # coercion of data elements: stored
        (0x0111, Outcome.SENT),  # duplicate SOP instance: the destination has it
        (0xA700, Outcome.TRANSIENT),  # out of resources
        (0xA7FF, Outcome.TRANSIENT),
        (0x0213, Outcome.TRANSIENT),  # resource limitation
        (0x0110, Outcome.TRANSIENT),  # processing failure
        (0xA900, Outcome.PERMANENT),  # data set does not match SOP class
        (0xC000, Outcome.PERMANENT),  # cannot understand
        (0xC211, Outcome.PERMANENT),
        (0x0122, Outcome.PERMANENT),  # SOP class not supported
        (0x0124, Outcome.PERMANENT),  # not authorised
    ],
)
def test_c_store_status_policy(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_backoff_doubles_up_to_the_maximum() -> None:
    send = load_settings(environ={"CTNODE_SEND__BACKOFF_INITIAL_S": "10"}).send
    assert [send.backoff_s(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert send.backoff_s(20) == send.backoff_max_s
    with pytest.raises(ConfigError, match="backoff"):
        load_settings(environ={"CTNODE_SEND__BACKOFF_INITIAL_S": "9999"})


def test_parse_since() -> None:
    now = utcnow()
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-02T03:04:05", now).tzinfo is not None
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)


# --- completion, routing and the queue on a database ------------------------------------------


@pytest.fixture
def node(tmp_path: Path):
    """Settings with a spool and an SQLite database under tmp_path, and a session factory."""
    environ = {
        "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
        "CTNODE_STORAGE__DATABASE_URL": f"sqlite:///{tmp_path / 'ctnode.db'}",
        "CTNODE_SERIES__COMPLETE_AFTER_S": "5",
    }
    settings = load_settings(environ=environ)
    engine = init_db(settings.storage.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


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


def test_claims_are_exclusive_and_the_lifecycle_is_logged(node) -> None:
    settings, sessions = node
    settings = calcium_only(settings)
    _receive(settings, sessions, "1.2.3.8", 20, at=utcnow() - timedelta(seconds=6))
    (job_id,) = complete_and_route(settings, sessions)
    claims: list = []
    threads = [
        threading.Thread(target=lambda n=n: claims.append(jobs.claim_next(sessions, f"w{n}")))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [c for c in claims if c is not None]
    assert len(taken) == 1 and taken[0].id == job_id
    worker = next(f"w{n}" for n in range(4) if jobs.heartbeat(sessions, job_id, f"w{n}"))
    assert not jobs.heartbeat(sessions, job_id, "someone-else")
    output = jobs.OutputFile("sr", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9.1", "1.2.9", "p", 1)
    assert jobs.finish(sessions, job_id, worker, [output], ["pacs"]) == JobState.SENDING
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        (delivery,) = job.deliveries
        delivery.state = DeliveryState.FAILED
        delivery.last_error = "no connection"
        jobs.settle_after_delivery(session, job)
        assert job.state == JobState.FAILED and job.retryable
    assert "re-queued" in jobs.retry(sessions, job_id)
    with sessions() as session:
        shown = show_job(session, job_id)
    assert [s["state"] for s in shown["stages"]] == [
        "queued",
        "running",
        "sending",
        "failed",
        "sending",
    ]
    assert shown["stages"][-1]["ongoing"] and shown["deliveries"][0]["state"] == "pending"
    assert timeline([], None) == []


def test_a_stale_claim_goes_back_to_the_queue(node) -> None:
    settings, sessions = node
    settings = calcium_only(settings)
    _receive(settings, sessions, "1.2.3.9", 20, at=utcnow() - timedelta(seconds=6))
    (job_id,) = complete_and_route(settings, sessions)
    assert jobs.claim_next(sessions, "dead-worker").id == job_id
    with write_session(sessions) as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=600)
    assert jobs.release_stale(sessions, 120) == [job_id]
    assert jobs.claim_next(sessions, "live-worker").attempt == 2
    # The dead worker's late answer is not taken.
    assert jobs.fail(sessions, job_id, "dead-worker", "x", retryable=True) == JobState.RUNNING
