"""Retention (node.retention, `ctnode purge`) on a real SQLite database, spool and outbox.

Series are built through the database API with real instance files written by node.spool and
real result files by node.pipelines.outbox; the clock is injected (`purge(now=...)`): data is
made at the real time and purged "days later". A crash is simulated by making the file step
fail once, after the rows' commit. One test runs the same on PostgreSQL (throwaway cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

import node.retention as retention
from node.config import Settings, load_settings
from node.db import (
    Delivery,
    DeliveryState,
    Event,
    Instance,
    Job,
    JobState,
    Result,
    Series,
    SeriesState,
    add_instance,
    init_db,
    make_session_factory,
    utcnow,
    write_session,
)
from node.pipelines.outbox import job_folder, write_result
from node.retention import PURGE_MARKER, purge, purger_lock
from node.spool import instance_path, write_durably
from node.spool_recovery import register_unrecorded_instances
from tests.integration.test_db_postgresql import postgres_url  # noqa: F401 - a fixture
from tests.nodeproc import site_config
from tests.synthetic_dicom import ct_slice
from tests.tools import REPO

SLICES = 3
DAY = timedelta(days=1)


@dataclass
class Node:
    settings: Settings
    sessions: object
    config: Path

    @property
    def spool(self) -> Path:
        return Path(self.settings.storage.spool_dir)

    @property
    def outbox(self) -> Path:
        return Path(self.settings.results.outbox_dir)

    def count(self, model: type, *where: object) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where))


def _node(folder: Path, database_url: str | None = None) -> Node:
    config = folder / "site.toml"
    config.write_text(
        site_config(
            {
                "storage": {
                    "spool_dir": str(folder / "spool"),
                    "database_url": database_url or f"sqlite:///{folder / 'ctnode.db'}",
                },
                "results": {"outbox_dir": str(folder / "outbox")},
                "retention": {"keep_days": 7},
            },
            {},
        )
    )
    settings = load_settings(config, environ={})
    sessions = make_session_factory(init_db(settings.storage.database_url))
    return Node(settings, sessions, config)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return _node(tmp_path)


@dataclass(frozen=True)
class Made:
    series_id: int
    series_uid: str
    folder: Path  # its spool folder
    job_ids: tuple[int, ...]


def _received(node: Node, at: datetime) -> tuple[int, str, Path]:
    """A series of SLICES real instance files in the spool, with their rows."""
    series_uid, study_uid = generate_uid(), generate_uid()
    for k in range(SLICES):
        ds = ct_slice(np.full((8, 8), 40 * k, np.int16), (0, 0, 2.5 * k),
                      series_uid=series_uid, instance=k + 1)  # fmt: skip
        ds.StudyInstanceUID = study_uid
        path = instance_path(node.spool, study_uid, series_uid, ds.SOPInstanceUID)
        encoded = BytesIO()
        ds.save_as(encoded, enforce_file_format=True)  # a Part 10 file, as the receiver writes
        size = write_durably(path, [encoded.getvalue()])
        with write_session(node.sessions) as session:
            add_instance(
                session,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                instance_number=k + 1,
                path=path.relative_to(node.spool).as_posix(),
                size_bytes=size,
                sender_ae="STORESCU",
                received_at=at,
            )
    with node.sessions() as session:
        series = session.scalar(select(Series).where(Series.series_uid == series_uid))
        return series.id, series_uid, path.parent


def make_series(
    node: Node,
    at: datetime,
    *,
    series_state: SeriesState = SeriesState.ROUTED,
    job_states: tuple[JobState, ...] = (JobState.DONE,),
    deliveries: tuple[DeliveryState, ...] = (DeliveryState.SENT,),
    finished_after: timedelta = timedelta(minutes=5),
) -> Made:
    """A received series in `series_state` with one job per entry of job_states, each with
    an SR in the outbox and one delivery per entry of `deliveries`."""
    series_id, series_uid, folder = _received(node, at)
    finished = at + finished_after
    job_ids = []
    with write_session(node.sessions) as session:
        series = session.get(Series, series_id)
        series.state = series_state
        series.completed_at = at + timedelta(minutes=1)
        for state in job_states:
            job = Job(series_id=series_id, pipeline="calcium", state=state, created_at=at,
                      finished_at=finished if state != JobState.QUEUED else None)  # fmt: skip
            if state == JobState.FAILED:
                job.retryable, job.error = True, "disk full"
            session.add(job)
            session.flush()
            job_ids.append(job.id)
            sr = ct_slice(np.zeros((4, 4), np.int16), (0, 0, 0), series_uid=generate_uid(),
                          instance=1)  # fmt: skip
            output = write_result(node.outbox, job.id, "sr", sr)
            session.add(Result(job_id=job.id, created_at=finished, **output.__dict__))
            for delivery_state in deliveries:
                session.add(Delivery(job_id=job.id, destination="pacs", state=delivery_state,
                                     created_at=finished, sent_at=finished
                                     if delivery_state == DeliveryState.SENT else None))  # fmt: skip
    return Made(series_id, series_uid, folder, tuple(job_ids))


def _gone(node: Node, made: Made) -> bool:
    rows = (
        node.count(Series, Series.id == made.series_id)
        + node.count(Instance, Instance.series_id == made.series_id)
        + node.count(Job, Job.series_id == made.series_id)
        + node.count(Event, Event.series_id == made.series_id)
    )
    outbox = any((node.outbox / job_folder(j)).exists() for j in made.job_ids)
    return rows == 0 and not made.folder.exists() and not outbox


def _intact(node: Node, made: Made) -> bool:
    return (
        node.count(Instance, Instance.series_id == made.series_id) == SLICES
        and len(list(made.folder.glob("*.dcm"))) == SLICES
        and all((node.outbox / job_folder(j) / "sr.dcm").exists() for j in made.job_ids)
    )


def test_purges_only_delivered_series_older_than_keep_days(node: Node) -> None:
    t0 = utcnow()
    delivered = make_series(node, t0)
    ignored = make_series(node, t0, series_state=SeriesState.IGNORED, job_states=())
    superseded_then_done = make_series(node, t0, job_states=(JobState.SUPERSEDED, JobState.DONE))
    must_stay = {
        "delivery failed": make_series(node, t0, deliveries=(DeliveryState.FAILED,)),
        "delivery pending": make_series(
            node, t0, job_states=(JobState.SENDING,), deliveries=(DeliveryState.PENDING,)
        ),
        "one of two deliveries sent": make_series(
            node, t0, deliveries=(DeliveryState.SENT, DeliveryState.FAILED)
        ),
        "failed, retryable": make_series(node, t0, job_states=(JobState.FAILED,), deliveries=()),
        "queued": make_series(node, t0, job_states=(JobState.QUEUED,), deliveries=()),
        "running": make_series(node, t0, job_states=(JobState.RUNNING,), deliveries=()),
        "done, delivered nowhere": make_series(node, t0, deliveries=()),
        "still receiving": make_series(node, t0, series_state=SeriesState.RECEIVING, job_states=()),
        "delivered 5 days later": make_series(node, t0, finished_after=5 * DAY),
    }
    purgeable = {delivered.series_uid, ignored.series_uid, superseded_then_done.series_uid}

    # Six days on: nothing is old enough.
    early = purge(node.settings, node.sessions, now=t0 + 6 * DAY)
    assert early.purged == [] and early.candidates == []

    # Eight days on: a dry run names exactly the purgeable series and deletes nothing.
    dry = purge(node.settings, node.sessions, now=t0 + 8 * DAY, dry_run=True)
    assert {c.series_uid for c in dry.candidates} == purgeable
    assert all(c.instances == SLICES for c in dry.candidates)
    assert delivered.folder.exists() and node.count(Series) == 3 + len(must_stay)

    report = purge(node.settings, node.sessions, now=t0 + 8 * DAY)
    assert set(report.purged) == purgeable
    assert report.files_deleted == 3 * SLICES
    for made in (delivered, ignored, superseded_then_done):
        assert _gone(node, made)
    for why, made in must_stay.items():
        assert _intact(node, made), why
    # Only the purged series' deliveries and results went.
    assert node.count(Delivery) == sum(
        node.count(Delivery, Delivery.job_id.in_(m.job_ids)) for m in must_stay.values()
    )
    # The job log keeps one event per purged series: its UIDs and counts.
    with node.sessions() as session:
        messages = session.scalars(
            select(Event.message).where(Event.kind == "retention.purged")
        ).all()
    assert len(messages) == 3
    line = next(m for m in messages if delivered.series_uid in m)
    assert f"{SLICES} instances" in line and "1 jobs, 1 results, 1 deliveries" in line
    # Nothing comes back at the next start, and a second pass finds nothing.
    assert register_unrecorded_instances(node.spool, node.sessions) == 0
    assert purge(node.settings, node.sessions, now=t0 + 8 * DAY).purged == []


def test_a_crash_after_the_rows_went_is_finished_by_the_next_run(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    t0 = utcnow()
    made = make_series(node, t0)
    real_delete_files = retention._delete_files

    def crash(*args: object, **kwargs: object) -> int:
        raise SystemExit("killed between the commit and the files")

    monkeypatch.setattr(retention, "_delete_files", crash)
    with pytest.raises(SystemExit):
        purge(node.settings, node.sessions, now=t0 + 8 * DAY)
    # The rows are gone, the files and the marker are still there ...
    assert node.count(Series, Series.id == made.series_id) == 0
    assert len(list(made.folder.glob("*.dcm"))) == SLICES
    assert (made.folder / PURGE_MARKER).exists()
    # ... and a restart does not register the files as a new series (it would be sent again).
    assert register_unrecorded_instances(node.spool, node.sessions) == 0
    assert node.count(Series) == 0

    monkeypatch.setattr(retention, "_delete_files", real_delete_files)
    report = purge(node.settings, node.sessions, now=t0 + 8 * DAY)
    assert report.interrupted_finished == 1 and report.files_deleted == SLICES
    assert _gone(node, made)


def test_a_crash_before_the_commit_leaves_the_series_whole(node: Node) -> None:
    t0 = utcnow()
    made = make_series(node, t0)
    # A marker from a run that died before its transaction committed.
    with node.sessions() as session:
        candidate = retention.find_purgeable(session, t0 + DAY)[0]
    retention._write_marker(made.folder, candidate, list(made.job_ids))
    # Not old enough yet: the stale marker is removed and the series stays, registered as before.
    report = purge(node.settings, node.sessions, now=t0 + 2 * DAY)
    assert report.purged == [] and not (made.folder / PURGE_MARKER).exists()
    assert _intact(node, made)


def test_an_instance_sent_again_during_the_purge_is_kept(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    t0 = utcnow() - 10 * DAY
    made = make_series(node, t0)
    for path in made.folder.glob("*.dcm"):  # files as old as their rows say
        os.utime(path, (t0.timestamp(), t0.timestamp()))
    resent = made.folder / "1.2.3.4.dcm"
    real_write_marker = retention._write_marker

    def marker_then_resend(*args: object) -> float:
        written_by = real_write_marker(*args)
        write_durably(resent, [b"sent again after the purge began"])
        return written_by

    monkeypatch.setattr(retention, "_write_marker", marker_then_resend)
    report = purge(node.settings, node.sessions)  # the real clock: ten days on
    assert report.purged == [made.series_uid] and report.files_deleted == SLICES
    assert resent.read_bytes() == b"sent again after the purge began"
    assert [p.name for p in made.folder.iterdir()] == [resent.name]


def test_one_purger_at_a_time(node: Node) -> None:
    t0 = utcnow()
    made = make_series(node, t0)
    with purger_lock(node.sessions, node.spool) as held:
        assert held
        report = purge(node.settings, node.sessions, now=t0 + 8 * DAY)
    assert report.locked_out and _intact(node, made)
    assert purge(node.settings, node.sessions, now=t0 + 8 * DAY).purged == [made.series_uid]


def test_ctnode_purge_cli(node: Node) -> None:
    made = make_series(node, utcnow() - timedelta(minutes=10), finished_after=timedelta())

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "node.cli", "purge", "--config", str(node.config), *args],
            capture_output=True, text=True, cwd=REPO, timeout=120,
            env={**os.environ, "COLUMNS": "250"},  # one table row per series
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "would purge 0 series" in cli("--dry-run")  # keep_days = 7
    out = cli("--dry-run", "--older-than-days", "0.001")
    assert made.series_uid in out and "would purge 1 series" in out
    assert _intact(node, made)
    assert "purged 1 series, 3 spool files deleted" in cli("--older-than-days", "0.001")
    assert _gone(node, made)


def test_purge_on_postgresql(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    node = _node(tmp_path, postgres_url)
    t0 = utcnow()
    delivered = make_series(node, t0)
    pending = make_series(node, t0, job_states=(JobState.SENDING,),
                          deliveries=(DeliveryState.PENDING,))  # fmt: skip
    with purger_lock(node.sessions, node.spool) as held:  # the advisory lock excludes others
        assert held
        assert purge(node.settings, node.sessions, now=t0 + 8 * DAY).locked_out
    report = purge(node.settings, node.sessions, now=t0 + 8 * DAY)
    assert report.purged == [delivered.series_uid]
    assert _gone(node, delivered) and _intact(node, pending)


def test_the_scheduler_purges_at_start(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ctnode serve` runs a retention pass at start (and every check_interval_s): here it
    finishes a purge a crash interrupted."""
    from node.scheduler import Scheduler
    from tests.nodeproc import wait_for

    made = make_series(node, utcnow())
    monkeypatch.setattr(retention, "_delete_files", lambda *a: sys.exit("crash"))
    with pytest.raises(SystemExit):
        purge(node.settings, node.sessions, now=utcnow() + 8 * DAY)
    monkeypatch.undo()
    scheduler = Scheduler(node.settings, node.sessions, sender=None)
    scheduler.start()
    try:
        wait_for(lambda: not made.folder.exists(), 10, "the scheduler's retention pass")
    finally:
        scheduler.stop()
    assert _gone(node, made)
