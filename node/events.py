"""The kinds of job-log events (the `events` table's `kind` column), one place for all of them.

A StrEnum: each member is its dotted string, so the database holds the same text as before and
a row read back compares equal to its member. docs/architecture.md's events table lists every
member (tests/unit/node/test_events.py checks it, and that node/ writes no kind outside this
enum). The one family of kinds outside it is a pipeline's stages, `job.stage.<stage>`
(`job_stage`), named by the pipelines' report(stage, message) calls.
"""

from __future__ import annotations

from enum import StrEnum

JOB_KIND_PREFIX = "job."  # every event of a job itself, its stages included
JOB_STAGE_PREFIX = "job.stage."


class EventKind(StrEnum):
    # Receiving (node.receive, node.spool_recovery)
    ASSOCIATION_REJECTED = "association.rejected"
    INSTANCE_REJECTED = "instance.rejected"
    INSTANCE_DUPLICATE = "instance.duplicate"
    INSTANCE_RECOVERED = "instance.recovered"
    # Series (node.db, node.series)
    SERIES_OPENED = "series.opened"
    SERIES_REOPENED = "series.reopened"
    SERIES_COMPLETE = "series.complete"
    SERIES_ROUTED = "series.routed"
    SERIES_IGNORED = "series.ignored"
    # Jobs (node.series, node.jobs)
    JOB_QUEUED = "job.queued"
    JOB_RUNNING = "job.running"
    JOB_SENDING = "job.sending"
    JOB_DONE = "job.done"
    JOB_FAILED = "job.failed"
    JOB_RETRY_SCHEDULED = "job.retry_scheduled"
    JOB_REQUEUED = "job.requeued"
    JOB_SUPERSEDED = "job.superseded"
    JOB_DISCARDED = "job.discarded"
    # Deliveries (node.jobs, node.send, node.series)
    DELIVERY_PENDING = "delivery.pending"
    DELIVERY_SENT = "delivery.sent"
    DELIVERY_RETRY_SCHEDULED = "delivery.retry_scheduled"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_RELEASED = "delivery.released"
    # Retention (node.retention)
    RETENTION_PURGED = "retention.purged"


def job_stage(stage: str) -> str:
    """The kind of a pipeline stage's event, e.g. "job.stage.score"."""
    return f"{JOB_STAGE_PREFIX}{stage}"
