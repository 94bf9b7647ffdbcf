"""Retention: delete series the PACS holds, once they are older than [retention] keep_days.

The node is a work area, not an archive: the PACS keeps the images it sent and the results the
node delivered. A series is *purgeable* when nothing about it can still be needed:

- it is `routed` with every job `done` and every delivery of those jobs `sent` (a done job
  without deliveries, its results kept in the outbox for want of a destination, stays), any
  other job `superseded` and not held by a worker; or it is `ignored` (no rule routed it);
- its last activity (last instance received, completion, jobs finished, deliveries sent) is
  older than the cutoff.

Anything queued, running, sending, failed (retryable or not: a failure waits for a person),
undelivered or still receiving is never touched. Purging a series deletes its spool files,
its jobs' outbox folders and its rows (instances, jobs, results, deliveries, and the events
about them), and records one `retention.purged` event with the UIDs and counts.

Crash safety. The spool is the record of truth at start: node.spool_recovery registers any
instance file without a row, so deleting the rows first and the files after could bring a
purged series back to life (routed and sent again) after a crash between the two. Deleting
the files first could leave rows pointing at missing files. So a purge is announced first:

1. a marker file (`.purging`, JSON: the series UID and its job ids) is written durably into
   the series' spool folder; spool recovery leaves a folder with a marker alone;
2. one transaction re-checks that the series is purgeable, deletes its rows and records the
   event;
3. the instance files and the jobs' outbox folders are deleted, the folder is fsync'd, and
   the marker removed last.

After a crash in 1-3 the next purge run (under the same lock) finds the marker: with the
series' row gone it finishes step 3; with the row still there (a crash before step 2's commit)
it only removes the marker and judges the series afresh. Every step is idempotent.

A series sent again while it is being purged keeps its new instances: an instance file is
deleted only if it was written before the marker and no later than an hour after the series'
last instance was received (recorded in the marker), so a copy sent again, whose row may be
committed just after step 2, is never the one deleted; the file is renamed aside first and
then checked, so a copy written at that instant is not deleted either. A new instance whose
row arrives before step 2 re-opens the series and stops the purge.

One purger at a time over the whole database: a PostgreSQL advisory lock (several hosts), or
on SQLite an exclusive lock on `<spool_dir>/.purge.lock` (one host). A run that finds the lock
taken does nothing; the holder covers the same ground.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from node.config import Settings
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
    record_event,
    utcnow,
    write_session,
)
from node.events import EventKind
from node.pipelines.outbox import job_folder
from node.spool import INSTANCE_SUFFIX, fsync_directory, series_folder, write_durably

LOG = logging.getLogger("ctnode.retention")

PURGE_MARKER = ".purging"
LOCK_FILE = ".purge.lock"
ASIDE_SUFFIX = ".purged"  # an instance file renamed aside just before it is deleted
# Slack between a spool file's modification time (the file system's clock) and the received_at
# the receiver records just after writing it (the node's clock).
CLOCK_SLACK = timedelta(hours=1)
# pg_try_advisory_lock takes a bigint; a fixed number derived from a name, not a magic one.
ADVISORY_LOCK_KEY = zlib.crc32(b"ctnode.retention")


@dataclass(frozen=True)
class PurgeCandidate:
    """A purgeable series, with what purging it removes."""

    series_id: int
    series_uid: str
    study_uid: str
    state: str
    last_activity: datetime
    last_received: datetime  # the series' last instance: its files are older
    instances: int
    instance_bytes: int
    jobs: int
    results: int
    deliveries: int


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    candidates: list[PurgeCandidate] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)  # series UIDs whose rows were deleted
    files_deleted: int = 0
    interrupted_finished: int = 0  # purges a crash had interrupted, completed by this run
    locked_out: bool = False  # another purger held the lock; this run did nothing


def _last_activity(series: Series) -> datetime:
    times = [series.last_received_at, series.completed_at]
    for job in series.jobs:
        times.append(job.finished_at)
        times.extend(d.sent_at for d in job.deliveries)
    return max(t for t in times if t is not None)


def _why_kept(series: Series) -> str | None:
    """Why the series must stay, or None when it may be purged (module docstring)."""
    if series.state == SeriesState.IGNORED:
        return None if not series.jobs else "ignored but has jobs"
    if series.state != SeriesState.ROUTED:
        return f"series is {series.state.value}"
    done = [job for job in series.jobs if job.state == JobState.DONE]
    if not done:
        return "no done job"
    for job in series.jobs:
        if job.state == JobState.SUPERSEDED:
            if job.claimed_by is not None:
                return f"superseded job #{job.id} still held by {job.claimed_by}"
        elif job.state != JobState.DONE:
            return f"job #{job.id} is {job.state.value}"
        elif not job.deliveries:
            return f"job #{job.id} was delivered nowhere (results kept in the outbox)"
        elif any(d.state != DeliveryState.SENT for d in job.deliveries):
            return f"job #{job.id} has a delivery not sent"
    return None


def _candidate(session: Session, series: Series) -> PurgeCandidate:
    instances, size = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0)).where(
            Instance.series_id == series.id
        )
    ).one()
    return PurgeCandidate(
        series_id=series.id,
        series_uid=series.series_uid,
        study_uid=series.study_uid,
        state=series.state.value,
        last_activity=_last_activity(series),
        last_received=series.last_received_at,
        instances=int(instances),
        instance_bytes=int(size),
        jobs=len(series.jobs),
        results=sum(len(job.results) for job in series.jobs),
        deliveries=sum(len(job.deliveries) for job in series.jobs),
    )


def find_purgeable(session: Session, cutoff: datetime) -> list[PurgeCandidate]:
    """Series that may be purged, last active before `cutoff`, the oldest first."""
    # A cheap filter in SQL (no instance arrived since the cutoff), the rules in Python.
    query = (
        select(Series)
        .where(
            Series.state.in_([SeriesState.ROUTED, SeriesState.IGNORED]),
            Series.last_received_at < cutoff,
        )
        .order_by(Series.last_received_at, Series.id)
        # Jobs and deliveries of all candidates in two queries, not two per series: series
        # that stay (failed, kept without a destination) are looked at again every pass.
        .options(selectinload(Series.jobs).selectinload(Job.deliveries))
    )
    found = []
    for series in session.scalars(query):
        if _why_kept(series) is None and _last_activity(series) < cutoff:
            found.append(_candidate(session, series))
    return found


# --- the lock --------------------------------------------------------------------------------


@contextmanager
def purger_lock(sessions: sessionmaker[Session], spool_dir: Path) -> Iterator[bool]:
    """Hold the one-purger-at-a-time lock for the block; yields False when another has it."""
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Session-level, on a connection held for the whole run; released explicitly and
            # by the server when the connection ends (a crashed purger does not keep it).
            taken = connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            connection.commit()
            try:
                yield bool(taken)
            finally:
                if taken:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    connection.commit()
        return
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(spool_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # the lock goes with the file descriptor
    finally:
        os.close(fd)


# --- files -------------------------------------------------------------------------------------


def _write_marker(folder: Path, candidate: PurgeCandidate, job_ids: list[int]) -> float:
    """Announce the purge durably; the time (epoch seconds) after which an instance file is
    not one of the purged series' (module docstring)."""
    received_by = (candidate.last_received + CLOCK_SLACK).timestamp()
    marker = folder / PURGE_MARKER
    announcement = {"series_uid": candidate.series_uid, "jobs": job_ids, "written_by": received_by}
    write_durably(marker, [json.dumps(announcement).encode()])
    return min(received_by, marker.stat().st_mtime)


def _delete_if_written_before(path: Path, written_by: float) -> bool:
    """Delete an instance file written no later than `written_by`; whether it was deleted.

    The file is renamed aside first, so the check and the deletion concern the same file: a
    copy the receiver puts at `path` meanwhile (the series sent again) is not touched, and a
    new copy renamed aside by mistake is linked back."""
    aside = path.with_name(path.name + ASIDE_SUFFIX)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.stat().st_mtime > written_by:
        with suppress(FileExistsError):  # a still newer copy arrived: that one stays
            os.link(aside, path)
        aside.unlink()
        return False
    aside.unlink()
    return True


def _delete_files(settings: Settings, folder: Path, written_by: float, job_ids: list[int]) -> int:
    """Step 3: instance files, outbox folders, then the marker and empty folders."""
    deleted = 0
    if folder.is_dir():
        for leftover in folder.glob(f"*{INSTANCE_SUFFIX}{ASIDE_SUFFIX}"):
            leftover.unlink(missing_ok=True)  # renamed aside by an interrupted run
        for path in folder.glob(f"*{INSTANCE_SUFFIX}"):
            deleted += _delete_if_written_before(path, written_by)
    outbox = Path(settings.results.outbox_dir)
    for job_id in job_ids:
        shutil.rmtree(outbox / job_folder(job_id), ignore_errors=True)
    if folder.is_dir():
        fsync_directory(folder)  # the deletions are durable before the marker goes
        (folder / PURGE_MARKER).unlink(missing_ok=True)
        for empty in (folder, folder.parent):
            try:
                empty.rmdir()
            except OSError:  # not empty: instances of a series sent again, other series
                break
    return deleted


def _finish_interrupted(settings: Settings, sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Markers left by a crash: finish purges whose rows are gone, drop the others' markers;
    (purges finished, files deleted)."""
    spool_dir = Path(settings.storage.spool_dir)
    finished = deleted = 0
    for marker in spool_dir.glob(f"*/*/{PURGE_MARKER}"):
        folder = marker.parent
        try:
            announced = json.loads(marker.read_text())
            written_by = min(float(announced["written_by"]), marker.stat().st_mtime)
        except (OSError, ValueError):
            LOG.error("purge marker %s unreadable; left for a person to look at", marker)
            continue
        with sessions() as session:
            series = session.scalar(
                select(Series.id).where(Series.series_uid == announced["series_uid"])
            )
            live_jobs = set(session.scalars(select(Job.id).where(Job.id.in_(announced["jobs"]))))
        if series is not None:
            # Interrupted before its rows were deleted: judged afresh by this run.
            marker.unlink(missing_ok=True)
            continue
        # SQLite may give a deleted job's id to a new job: that one's folder stays.
        orphaned_jobs = [job_id for job_id in announced["jobs"] if job_id not in live_jobs]
        deleted += _delete_files(settings, folder, written_by, orphaned_jobs)
        finished += 1
        LOG.info("finished the interrupted purge of series %s", announced["series_uid"])
    return finished, deleted


# --- rows ----------------------------------------------------------------------------------------


def _delete_rows(session: Session, series_id: int) -> None:
    job_ids = select(Job.id).where(Job.series_id == series_id).scalar_subquery()
    delivery_ids = select(Delivery.id).where(Delivery.job_id.in_(job_ids)).scalar_subquery()
    session.execute(
        delete(Event).where(
            or_(
                Event.series_id == series_id,
                Event.job_id.in_(job_ids),
                Event.delivery_id.in_(delivery_ids),
            )
        )
    )
    session.execute(delete(Delivery).where(Delivery.job_id.in_(job_ids)))
    session.execute(delete(Result).where(Result.job_id.in_(job_ids)))
    # jobs.superseded_by points at a job of the same series.
    session.execute(update(Job).where(Job.series_id == series_id).values(superseded_by=None))
    session.execute(delete(Job).where(Job.series_id == series_id))
    session.execute(delete(Instance).where(Instance.series_id == series_id))
    session.execute(delete(Series).where(Series.id == series_id))


def _purge_one(
    settings: Settings, sessions: sessionmaker[Session], candidate: PurgeCandidate, cutoff: datetime
) -> int | None:
    """Steps 1-3 for one series; files deleted, or None when it turned out not purgeable."""
    spool_dir = Path(settings.storage.spool_dir)
    folder = series_folder(spool_dir, candidate.study_uid, candidate.series_uid)
    with sessions() as session:
        job_ids = list(session.scalars(select(Job.id).where(Job.series_id == candidate.series_id)))
    written_by = _write_marker(folder, candidate, job_ids)
    with write_session(sessions) as session:
        # FOR UPDATE (PostgreSQL): a receiver re-opening the series waits for this commit and
        # then finds no row; SQLite's write transaction already excludes every other writer.
        series = session.scalar(
            select(Series).where(Series.id == candidate.series_id).with_for_update()
        )
        current_jobs = sorted(job.id for job in series.jobs) if series is not None else None
        if (
            series is None
            or _why_kept(series) is not None
            or _last_activity(series) >= cutoff
            or current_jobs != sorted(job_ids)
        ):
            kept = True
        else:
            kept = False
            _delete_rows(session, series.id)
            record_event(
                session,
                EventKind.RETENTION_PURGED,
                f"series {candidate.series_uid} (study {candidate.study_uid}, "
                f"{candidate.state}, last active {candidate.last_activity:%Y-%m-%d %H:%M} UTC): "
                f"{candidate.instances} instances ({candidate.instance_bytes} bytes), "
                f"{candidate.jobs} jobs, {candidate.results} results, "
                f"{candidate.deliveries} deliveries deleted",
            )
    if kept:
        (folder / PURGE_MARKER).unlink(missing_ok=True)
        return None
    return _delete_files(settings, folder, written_by, job_ids)


def purge(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    keep_days: float | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Purge every purgeable series last active more than `keep_days` (default: [retention]
    keep_days) before `now`; with dry_run, only find them. Callers check keep_days > 0."""
    days = settings.retention.keep_days if keep_days is None else keep_days
    cutoff = (now or utcnow()) - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    if dry_run:
        with sessions() as session:
            report.candidates = find_purgeable(session, cutoff)
        return report
    with purger_lock(sessions, Path(settings.storage.spool_dir)) as held:
        if not held:
            report.locked_out = True
            LOG.info("another purger is running; this pass skipped")
            return report
        report.interrupted_finished, report.files_deleted = _finish_interrupted(settings, sessions)
        with sessions() as session:
            report.candidates = find_purgeable(session, cutoff)
        for candidate in report.candidates:
            deleted = _purge_one(settings, sessions, candidate, cutoff)
            if deleted is None:
                continue
            report.purged.append(candidate.series_uid)
            report.files_deleted += deleted
    if report.purged:
        LOG.info(
            "retention: %d series purged (last active before %s UTC), %d files deleted",
            len(report.purged),
            f"{cutoff:%Y-%m-%d %H:%M}",
            report.files_deleted,
        )
    return report
