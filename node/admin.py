"""What the admin CLI shows, read from the database as plain dicts (tables and --json alike).

A job's timeline is its events in order; each state change starts a stage that lasts until
the next state change (the last one until now, or until the job finished), and the
`job.stage.*` events inside `running` carry the time of each pipeline step.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from node.db import (
    Delivery,
    DeliveryState,
    Event,
    Job,
    JobState,
    Series,
    SeriesState,
    list_series,
    utcnow,
)
from node.events import JOB_KIND_PREFIX, EventKind

RELATIVE_TIME = re.compile(r"(?P<n>\d+(\.\d+)?)(?P<unit>[smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FINAL_STATES = {JobState.DONE.value, JobState.FAILED.value, JobState.SUPERSEDED.value}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'30m', '2h', '1d' (ago) or an ISO 8601 time (UTC when it names no zone)."""
    now = now or utcnow()
    match = RELATIVE_TIME.fullmatch(text.strip())
    if match:
        return now - timedelta(seconds=float(match["n"]) * UNIT_SECONDS[match["unit"]])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ValueError(f"--since: '30m', '2h', '1d' or an ISO time, got {text!r}") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=now.tzinfo)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_row(job: Job) -> dict:
    end = job.finished_at if job.state.value in FINAL_STATES else None
    return {
        "id": job.id,
        "pipeline": job.pipeline,
        "state": job.state.value,
        "series_id": job.series_id,
        "series_uid": job.series.series_uid,
        "study_uid": job.series.study_uid,
        "sender_ae": job.series.sender_ae,
        "instances": job.series.instance_count,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(end),
        "seconds": round(((end or utcnow()) - job.created_at).total_seconds(), 2),
        "error": job.error,
        "retryable": job.retryable,
        "superseded_by": job.superseded_by,
    }


def series_rows(session: Session, limit: int | None = None) -> list[dict]:
    """Received series, the most recently active first (`ctnode series`, the status page)."""
    return [
        {
            "id": s.id,
            "study_uid": s.study_uid,
            "series_uid": s.series_uid,
            "modality": s.modality,
            "instances": s.instance_count,
            "sender_ae": s.sender_ae,
            "first_received_at": _iso(s.first_received_at),
            "last_received_at": _iso(s.last_received_at),
            "completed_at": _iso(s.completed_at),
            "state": s.state.value,
        }
        for s in list_series(session, limit)
    ]


def list_jobs(
    session: Session, state: str | None = None, since: datetime | None = None, limit: int = 100
) -> list[dict]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == JobState(state))
    if since is not None:
        query = query.where(Job.created_at >= since)
    return [job_row(job) for job in session.scalars(query)]


def timeline(events: list[Event], finished_at: datetime | None) -> list[dict]:
    """The job's stages: each state event opens one, lasting until the next state event."""
    changes = [e for e in events if e.state is not None and e.kind.startswith(JOB_KIND_PREFIX)]
    stages = []
    for i, event in enumerate(changes):
        if i + 1 < len(changes):
            end = changes[i + 1].at
        elif event.state in FINAL_STATES:
            end = None  # a final state has no duration
        else:
            end = utcnow()
        stages.append(
            {
                "state": event.state,
                "at": _iso(event.at),
                "seconds": round((end - event.at).total_seconds(), 2) if end else None,
                "ongoing": end is not None and i + 1 == len(changes),
            }
        )
    return stages


def show_job(session: Session, job_id: int) -> dict | None:
    job = session.get(Job, job_id)
    if job is None:
        return None
    series = job.series
    events = list(
        session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.at, Event.id))
    )
    series_events = list(
        session.scalars(
            select(Event)
            .where(Event.series_id == series.id, Event.job_id.is_(None))
            .order_by(Event.at, Event.id)
        )
    )
    return {
        **job_row(job),
        "series": {
            "id": series.id,
            "series_uid": series.series_uid,
            "study_uid": series.study_uid,
            "modality": series.modality,
            "instances": series.instance_count,
            "sender_ae": series.sender_ae,
            "first_received_at": _iso(series.first_received_at),
            "last_received_at": _iso(series.last_received_at),
            "completed_at": _iso(series.completed_at),
            "state": series.state.value,
        },
        "stages": timeline(events, job.finished_at),
        "events": [_event_row(e) for e in events],
        "series_events": [_event_row(e) for e in series_events],
        "outputs": [
            {
                "kind": r.kind,
                "sop_class_uid": r.sop_class_uid,
                "sop_instance_uid": r.sop_instance_uid,
                "series_uid": r.series_uid,
                "path": r.path,
                "size_bytes": r.size_bytes,
            }
            for r in sorted(job.results, key=lambda r: r.id)
        ],
        "deliveries": [
            {
                "id": d.id,
                "destination": d.destination,
                "state": d.state.value,
                "attempts": d.attempts,
                "sent_at": _iso(d.sent_at),
                "next_attempt_at": _iso(d.next_attempt_at)
                if d.state == DeliveryState.PENDING
                else None,
                "last_error": d.last_error,
                "last_status": d.last_status,
            }
            for d in sorted(job.deliveries, key=lambda d: d.id)
        ],
    }


def _event_row(event: Event) -> dict:
    return {
        "at": _iso(event.at),
        "kind": event.kind,
        "state": event.state,
        "message": event.message,
        "delivery_id": event.delivery_id,
    }


def status(session: Session, recent: timedelta = timedelta(hours=24), limit: int = 10) -> dict:
    """Queue depths (series, jobs, deliveries by state) and recent failures."""

    def counts(column, enum_class) -> dict[str, int]:
        found = dict(session.execute(select(column, func.count()).group_by(column)).all())
        return {member.value: int(found.get(member, 0)) for member in enum_class}

    since = utcnow() - recent
    oldest_queued = session.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
    failed_jobs = session.scalars(
        select(Job)
        .where(Job.state == JobState.FAILED, Job.finished_at >= since)
        .order_by(Job.finished_at.desc())
        .limit(limit)
    )
    failure_events = session.scalars(
        select(Event)
        .where(
            Event.at >= since,
            or_(
                Event.kind.in_(
                    (
                        EventKind.DELIVERY_FAILED,
                        EventKind.DELIVERY_RETRY_SCHEDULED,
                        EventKind.SERIES_IGNORED,
                    )
                ),
                Event.kind.in_(
                    (
                        EventKind.ASSOCIATION_REJECTED,
                        EventKind.INSTANCE_REJECTED,
                        EventKind.JOB_RETRY_SCHEDULED,
                    )
                ),
            ),
        )
        .order_by(Event.at.desc(), Event.id.desc())
        .limit(limit)
    )
    return {
        "series": counts(Series.state, SeriesState),
        "jobs": counts(Job.state, JobState),
        "deliveries": counts(Delivery.state, DeliveryState),
        "oldest_queued_job_at": _iso(oldest_queued),
        "failed_jobs": [
            {
                "id": j.id,
                "finished_at": _iso(j.finished_at),
                "error": j.error,
                "retryable": j.retryable,
            }
            for j in failed_jobs
        ],
        "recent_problems": [
            {"at": _iso(e.at), "kind": e.kind, "job_id": e.job_id, "message": e.message}
            for e in failure_events
        ],
        "window_hours": recent.total_seconds() / 3600,
    }
