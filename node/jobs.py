"""The job queue in the database: claim, heartbeat, stages, finish, fail, retry.

Claims are atomic: on SQLite the claim runs in a BEGIN IMMEDIATE transaction (one writer at a
time), on PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, so two workers
never take the same job and neither waits for the other. A running job carries its worker's
name, its process (host key, pid, start time: node.claims) and a heartbeat. A job held by a
process of this host that no longer runs is put back into the queue at once
(`release_dead_local`); any other job whose heartbeat is older than [worker] stale_after_s is
put back too (its worker died, perhaps on another host). Every state change is an event (the
job log).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from node.claims import Claimant, current, release_dead_held
from node.db import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Result,
    record_event,
    utcnow,
    write_session,
)
from node.events import EventKind, job_stage


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    series_id: int
    pipeline: str
    attempt: int


@dataclass(frozen=True)
class OutputFile:
    """A result object written to the outbox, to be recorded as a Result row."""

    kind: str  # "sr", "seg", "capture"
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    path: str  # as stored in results.path (see node.pipelines.outbox)
    size_bytes: int


class JobNotFoundError(LookupError):
    pass


def _hold(job: Job, worker: str, claimant: Claimant) -> None:
    job.claimed_by = worker
    job.claim_host, job.claim_pid, job.claim_started = claimant.host, claimant.pid, claimant.started


def _let_go(job: Job) -> None:
    job.claimed_by = job.claim_host = job.claim_pid = job.claim_started = None


def claim_next(
    sessions: sessionmaker[Session], worker: str, claimant: Claimant | None = None
) -> ClaimedJob | None:
    """Take the oldest queued job that is due, or None when there is none; the claim records
    `claimant` (default: the calling process)."""
    claimant = claimant or current()
    now = utcnow()
    due = (Job.state == JobState.QUEUED) & or_(
        Job.next_attempt_at.is_(None), Job.next_attempt_at <= now
    )
    # A plain read first: an idle worker polls often, and on SQLite a write transaction would
    # take the database's one write lock from the receiver each time.
    with sessions() as session:
        if session.scalar(select(Job.id).where(due).limit(1)) is None:
            return None
    with write_session(sessions) as session:
        job = session.scalar(
            select(Job)
            .where(due)
            .order_by(Job.created_at, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if job is None:
            return None
        job.state = JobState.RUNNING
        job.attempts += 1
        _hold(job, worker, claimant)
        job.started_at = now
        job.heartbeat_at = now
        job.next_attempt_at = None
        record_event(
            session,
            EventKind.JOB_RUNNING,
            f"attempt {job.attempts} by worker {worker}",
            state=JobState.RUNNING,
            series_id=job.series_id,
            job_id=job.id,
        )
        return ClaimedJob(job.id, job.series_id, job.pipeline, job.attempts)


def heartbeat(sessions: sessionmaker[Session], job_id: int, worker: str) -> bool:
    """Refresh the claim; False when the job is no longer this worker's running job."""
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.state != JobState.RUNNING or job.claimed_by != worker:
            return False
        job.heartbeat_at = utcnow()
        return True


def release_stale(sessions: sessionmaker[Session], stale_after_s: float) -> list[int]:
    """Put running jobs whose worker stopped heart-beating back into the queue."""
    limit = utcnow() - timedelta(seconds=stale_after_s)
    with write_session(sessions) as session:
        stale = list(
            session.scalars(
                select(Job)
                .where(Job.state == JobState.RUNNING, Job.heartbeat_at < limit)
                .with_for_update(skip_locked=True)
            )
        )
        for job in stale:
            record_event(
                session,
                EventKind.JOB_REQUEUED,
                f"worker {job.claimed_by} stopped heart-beating (last at "
                f"{job.heartbeat_at:%H:%M:%S}); back in the queue",
                state=JobState.QUEUED,
                series_id=job.series_id,
                job_id=job.id,
            )
            job.state = JobState.QUEUED
            _let_go(job)
        return [job.id for job in stale]


def release_dead_local(sessions: sessionmaker[Session], me: Claimant) -> list[int]:
    """Put running jobs held by a process of this host that no longer runs back into the
    queue at once; their ids. Live processes and other hosts' claims are left alone."""
    held_here = (
        (Job.state == JobState.RUNNING) & (Job.claim_host == me.host) & Job.claim_pid.isnot(None)
    )

    def requeue(session: Session, job: Job, holder: Claimant) -> None:
        record_event(
            session,
            EventKind.JOB_REQUEUED,
            f"worker {job.claimed_by} no longer runs on this host (pid {holder.pid} ended); "
            "back in the queue at once",
            state=JobState.QUEUED,
            series_id=job.series_id,
            job_id=job.id,
        )
        job.state = JobState.QUEUED
        job.next_attempt_at = None
        _let_go(job)

    return release_dead_held(sessions, Job, held_here, me, requeue)


def record_stage(sessions: sessionmaker[Session], job_id: int, stage: str, message: str) -> None:
    """One line of the job log for a stage inside `running` (its message holds the timing)."""
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        record_event(session, job_stage(stage), message, series_id=job.series_id, job_id=job_id)


def finish(
    sessions: sessionmaker[Session],
    job_id: int,
    worker: str,
    outputs: list[OutputFile],
    destinations: list[str],
) -> JobState:
    """Record the job's results and a pending delivery per destination; the new state
    (`sending`, `done` without destinations, or `superseded` when the series changed while
    it ran: then nothing is recorded and nothing is sent)."""
    now = utcnow()
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        if job.state != JobState.RUNNING or job.claimed_by != worker:
            record_event(
                session,
                EventKind.JOB_DISCARDED,
                f"results of worker {worker} not kept: the job is {job.state.value} now",
                series_id=job.series_id,
                job_id=job.id,
            )
            return job.state
        for output in outputs:
            session.add(Result(job_id=job.id, created_at=now, **output.__dict__))
        kinds = ", ".join(o.kind for o in outputs)
        _let_go(job)
        if not destinations:
            job.state = JobState.DONE
            job.finished_at = now
            record_event(
                session,
                EventKind.JOB_DONE,
                f"results ({kinds}) kept in the outbox: no [[destinations]] configured",
                state=JobState.DONE,
                series_id=job.series_id,
                job_id=job.id,
            )
            return job.state
        job.state = JobState.SENDING
        session.flush()
        record_event(
            session,
            EventKind.JOB_SENDING,
            f"results ({kinds}) to {', '.join(destinations)}",
            state=JobState.SENDING,
            series_id=job.series_id,
            job_id=job.id,
        )
        for name in destinations:
            delivery = Delivery(
                job_id=job.id,
                destination=name,
                state=DeliveryState.PENDING,
                created_at=now,
                next_attempt_at=now,
            )
            session.add(delivery)
            session.flush()
            record_event(
                session,
                EventKind.DELIVERY_PENDING,
                f"delivery #{delivery.id} to {name}",
                state=DeliveryState.PENDING,
                series_id=job.series_id,
                job_id=job.id,
                delivery_id=delivery.id,
            )
        return job.state


def fail(
    sessions: sessionmaker[Session],
    job_id: int,
    worker: str,
    reason: str,
    *,
    retryable: bool,
    retry_at: datetime | None = None,
) -> JobState:
    """A failed attempt: back to the queue at `retry_at`, or `failed` with the reason and
    whether a retry (`ctnode jobs retry`) makes sense."""
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        if job.state != JobState.RUNNING or job.claimed_by != worker:
            return job.state  # superseded or taken back meanwhile; its new owner decides
        _let_go(job)
        job.error = reason
        job.retryable = retryable
        if retry_at is not None:
            job.state = JobState.QUEUED
            job.next_attempt_at = retry_at
            record_event(
                session,
                EventKind.JOB_RETRY_SCHEDULED,
                f"attempt {job.attempts} failed: {reason}; next try at {retry_at:%H:%M:%S} UTC",
                state=JobState.QUEUED,
                series_id=job.series_id,
                job_id=job.id,
            )
        else:
            job.state = JobState.FAILED
            job.finished_at = utcnow()
            record_event(
                session,
                EventKind.JOB_FAILED,
                f"{reason} ({'retryable' if retryable else 'not retryable'})",
                state=JobState.FAILED,
                series_id=job.series_id,
                job_id=job.id,
            )
        return job.state


def settle_after_delivery(session: Session, job: Job) -> None:
    """Move a sending job to `done` once every delivery is sent, or to `failed` once none is
    pending and one failed (call in the transaction that changed a delivery)."""
    if job.state != JobState.SENDING:
        return
    states = [d.state for d in job.deliveries]
    if any(state == DeliveryState.PENDING for state in states):
        return
    now = utcnow()
    job.finished_at = now
    failed = [d for d in job.deliveries if d.state == DeliveryState.FAILED]
    if not failed:
        job.state = JobState.DONE
        job.error = None
        record_event(
            session,
            EventKind.JOB_DONE,
            f"results delivered to {', '.join(d.destination for d in job.deliveries)}",
            state=JobState.DONE,
            series_id=job.series_id,
            job_id=job.id,
        )
        return
    job.state = JobState.FAILED
    job.retryable = True
    job.error = "; ".join(f"delivery to {d.destination}: {d.last_error}" for d in failed)
    record_event(
        session,
        EventKind.JOB_FAILED,
        f"{job.error} (retryable: ctnode jobs retry {job.id})",
        state=JobState.FAILED,
        series_id=job.series_id,
        job_id=job.id,
    )


def retry(sessions: sessionmaker[Session], job_id: int) -> str:
    """`ctnode jobs retry`: re-queue a failed job's failed deliveries when it has results,
    else re-run the job; what was done, as a sentence."""
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFoundError(f"no job #{job_id}")
        if job.state != JobState.FAILED:
            raise ValueError(f"job #{job_id} is {job.state.value}; only failed jobs can be retried")
        now = utcnow()
        failed = [d for d in job.deliveries if d.state == DeliveryState.FAILED]
        if job.results and failed:
            for delivery in failed:
                delivery.state = DeliveryState.PENDING
                delivery.attempts = 0
                delivery.next_attempt_at = now
                record_event(
                    session,
                    EventKind.DELIVERY_PENDING,
                    f"delivery #{delivery.id} to {delivery.destination} re-queued by the CLI",
                    state=DeliveryState.PENDING,
                    series_id=job.series_id,
                    job_id=job.id,
                    delivery_id=delivery.id,
                )
            job.state = JobState.SENDING
            job.finished_at = None
            job.error = None
            record_event(
                session,
                EventKind.JOB_SENDING,
                f"retry from the CLI: {len(failed)} failed deliver{'y' if len(failed) == 1 else 'ies'}",
                state=JobState.SENDING,
                series_id=job.series_id,
                job_id=job.id,
            )
            return f"job #{job_id}: {len(failed)} failed deliveries re-queued"
        job.state = JobState.QUEUED
        job.next_attempt_at = None
        job.finished_at = None
        job.error = None
        job.retryable = None
        record_event(
            session,
            EventKind.JOB_QUEUED,
            "retry from the CLI: the job runs again",
            state=JobState.QUEUED,
            series_id=job.series_id,
            job_id=job.id,
        )
        return f"job #{job_id} queued to run again"
