"""Prometheus metrics of the node, read from the database at scrape time.

Why from the database and not from in-process counters: the receiver and the worker may run
as separate processes on separate hosts over one PostgreSQL database, and a process restarts
(upgrades, a crash). In-process counters would each see one process's share and restart at
zero; the database already holds every instance, job, delivery and job-log line, so a scrape
of any node process reports the same totals for the whole installation, unchanged by
restarts. The consequences an operator should know (docs/operations.md says them too):

- The families marked "(whole installation)" are the same on every process that shares the
  database: scrape one of them for these, or aggregate with max(), not sum().
- Counters are counts of rows. Deleting rows (a future retention purge) lowers them, which
  Prometheus reads as a counter reset.
- Each scrape runs a handful of aggregate queries (counts grouped by state or by event kind).
  The stage-time histogram is the one family that needs the job log itself: it is built
  incrementally (`StageDurations`), the whole log read once per process and then only the
  jobs finished since the previous scrape.

Process-local facts (free space of this host's spool, the process's own CPU and memory) come
from this process, as they should.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.db import (
    Delivery,
    DeliveryState,
    Event,
    Job,
    JobState,
    Series,
    SeriesState,
    utcnow,
)
from node.events import JOB_KIND_PREFIX, JOB_STAGE_PREFIX, EventKind

LOG = logging.getLogger("ctnode.http")

# The receiver's refusal statuses (node/receive.py), as the `reason` label says them.
REFUSAL_REASONS = {
    "0xA700": "out_of_resources",
    "0xA900": "dataset_does_not_match_sop_class",
    "0xC000": "cannot_understand",
    "0xC210": "cannot_decode",
    "0xC211": "unexpected_error",
}
# "status 0xA700: ..." is how node/receive.py words an `instance.rejected` event.
STATUS_OFFSET, STATUS_LENGTH = len("status ") + 1, len("0xA700")

# Seconds: from a pipeline step of a small series (0.1 s) to a job waiting hours in the queue.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
FINAL_JOB_STATES = (JobState.DONE.value, JobState.FAILED.value, JobState.SUPERSEDED.value)
# A job finished this long before the newest finish already seen is looked at again: its
# transaction may commit after a later one (another host, a slow commit), and a clock of
# another host may lag.
FINISH_MARGIN = timedelta(minutes=10)
EVENT_BATCH = 500  # job ids per query of the job log (bound parameters stay few)


@dataclass
class _Histogram:
    counts: list[int]  # per bucket of STAGE_BUCKETS (not cumulative), then the +Inf overflow
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, le in enumerate(STAGE_BUCKETS) if seconds <= le), -1)
        self.counts[index] += 1
        self.total += seconds


def job_stage_durations(events: list[tuple[str, str | None, datetime]]) -> Iterator[tuple]:
    """(stage, seconds) of a finished job's last attempt, from its job.* events in order.

    The stages are the job's states (queued, running, sending: each lasts until the next state
    change) and the pipeline steps inside `running` (a `job.stage.NAME` event is written when
    step NAME ends, so it lasts from the job event before it). Only the events after an
    earlier final state (done/failed before a retry) count, so a retried job's first attempt
    is not counted twice.
    """
    finals = [i for i, (_kind, state, _at) in enumerate(events) if state in FINAL_JOB_STATES]
    if not finals:
        return
    start = finals[-2] + 1 if len(finals) > 1 else 0
    attempt = events[start : finals[-1] + 1]
    for (_kind, _state, before), (kind, _, at) in zip(attempt, attempt[1:], strict=False):
        if kind.startswith(JOB_STAGE_PREFIX):
            yield kind.removeprefix(JOB_STAGE_PREFIX), (at - before).total_seconds()
    changes = [(state, at) for _kind, state, at in attempt if state is not None]
    for (state, began), (_next, ended) in zip(changes, changes[1:], strict=False):
        yield state, (ended - began).total_seconds()


class StageDurations:
    """The histogram of seconds per job stage, by pipeline, over the finished jobs in the
    database; updated incrementally (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._histograms: dict[tuple[str, str], _Histogram] = {}
        self._seen: dict[int, datetime] = {}  # job id -> the finish already counted
        self._newest: datetime | None = None

    def update(self, session: Session) -> None:
        with self._lock:
            query = select(Job.id, Job.pipeline, Job.finished_at).where(
                Job.state.in_(FINAL_JOB_STATES), Job.finished_at.is_not(None)
            )
            if self._newest is not None:
                query = query.where(Job.finished_at >= self._newest - FINISH_MARGIN)
            finished = [row for row in session.execute(query) if self._seen.get(row.id) != row[2]]
            for batch_start in range(0, len(finished), EVENT_BATCH):
                batch = finished[batch_start : batch_start + EVENT_BATCH]
                self._count(session, batch)
            for row in finished:
                self._seen[row.id] = row.finished_at
                if self._newest is None or row.finished_at > self._newest:
                    self._newest = row.finished_at
            if self._newest is not None:  # older finishes are never looked at again
                horizon = self._newest - FINISH_MARGIN
                self._seen = {job: at for job, at in self._seen.items() if at >= horizon}

    def _count(self, session: Session, jobs: list) -> None:
        pipelines = {row.id: row.pipeline for row in jobs}
        events: dict[int, list] = defaultdict(list)
        rows = session.execute(
            select(Event.job_id, Event.kind, Event.state, Event.at)
            .where(Event.job_id.in_(pipelines), Event.kind.like(f"{JOB_KIND_PREFIX}%"))
            .order_by(Event.job_id, Event.at, Event.id)
        )
        for job_id, kind, state, at in rows:
            events[job_id].append((kind, state, at))
        for job_id, job_events in events.items():
            for stage, seconds in job_stage_durations(job_events):
                key = (pipelines[job_id], stage)
                histogram = self._histograms.setdefault(
                    key, _Histogram([0] * (len(STAGE_BUCKETS) + 1))
                )
                histogram.observe(max(seconds, 0.0))

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "ctnode_job_stage_seconds",
            "Seconds finished jobs spent per stage: states queued/running/sending and the "
            "pipeline steps inside running (whole installation)",
            labels=["pipeline", "stage"],
        )
        with self._lock:
            for (pipeline, stage), histogram in sorted(self._histograms.items()):
                cumulative, buckets = 0, []
                for le, count in zip(
                    (*map(str, STAGE_BUCKETS), "+Inf"), histogram.counts, strict=True
                ):
                    cumulative += count
                    buckets.append((le, cumulative))
                family.add_metric([pipeline, stage], buckets, histogram.total)
        return family


class NodeCollector(Collector):
    """Every ctnode family; the database ones from cheap aggregate queries at scrape time."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.stage_durations = StageDurations()

    def warm(self) -> None:
        """Read the job log for the stage histogram now (at start, in the background), so the
        first scrape of a node with a long history is as fast as the next ones (measured:
        2.9 s for 20,000 jobs, then 0.15 s per scrape; docs/operations.md)."""
        try:
            with self.sessions() as session:
                self.stage_durations.update(session)
        except SQLAlchemyError as error:
            LOG.warning("stage histogram not read at start (%s)", type(error).__name__)

    def collect(self) -> Iterable[Metric]:
        yield from self._spool_families()
        try:
            with self.sessions() as session:
                families = list(self._database_families(session))
                self.stage_durations.update(session)
                families.append(self.stage_durations.family())
        except SQLAlchemyError:
            families = []
        up = GaugeMetricFamily(
            "ctnode_database_up", "1 when this scrape could read the node's database"
        )
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _spool_families(self) -> Iterator[Metric]:
        spool = Path(self.settings.storage.spool_dir)
        free = GaugeMetricFamily(
            "ctnode_spool_free_bytes", "Free bytes on the file system of this host's spool"
        )
        free.add_metric([], shutil.disk_usage(existing_parent(spool)).free)
        yield free
        watermark = GaugeMetricFamily(
            "ctnode_spool_min_free_bytes",
            "[storage] min_free_mb in bytes: below it instances are refused with 0xA700",
        )
        watermark.add_metric([], self.settings.storage.min_free_mb * 1024 * 1024)
        yield watermark

    def _database_families(self, session: Session) -> Iterator[Metric]:
        received = session.scalar(select(func.coalesce(func.sum(Series.instance_count), 0)))
        yield _counter(
            "ctnode_instances_received",
            "Instances received and stored (duplicates not counted; whole installation)",
            [([], received)],
        )
        status = func.substr(Event.message, STATUS_OFFSET, STATUS_LENGTH)
        refused = session.execute(
            select(status, func.count())
            .where(Event.kind == EventKind.INSTANCE_REJECTED)
            .group_by(status)
        ).all()
        yield _counter(
            "ctnode_instances_refused",
            "Instances refused with a DICOM failure status, by status (whole installation)",
            [([code, REFUSAL_REASONS.get(code, "other")], n) for code, n in refused],
            labels=["status", "reason"],
        )
        kinds = dict(
            session.execute(
                select(Event.kind, func.count())
                .where(Event.kind.in_(EVENT_COUNTERS))
                .group_by(Event.kind)
            ).all()
        )
        for kind, (name, documentation) in EVENT_COUNTERS.items():
            yield _counter(name, documentation, [([], kinds.get(kind, 0))])

        yield _by_state(session, Series.state, SeriesState, "ctnode_series", "Series by state")
        jobs = GaugeMetricFamily(
            "ctnode_jobs",
            "Jobs by pipeline and state (whole installation)",
            labels=["pipeline", "state"],
        )
        for pipeline, state, n in session.execute(
            select(Job.pipeline, Job.state, func.count()).group_by(Job.pipeline, Job.state)
        ):
            jobs.add_metric([pipeline, JobState(state).value], n)
        yield jobs
        yield _by_state(
            session, Delivery.state, DeliveryState, "ctnode_deliveries", "Deliveries by state"
        )

        queued, oldest = session.execute(
            select(func.count(), func.min(Job.created_at)).where(Job.state == JobState.QUEUED)
        ).one()
        depth = GaugeMetricFamily(
            "ctnode_job_queue_depth", "Jobs queued, waiting for a worker (whole installation)"
        )
        depth.add_metric([], queued)
        yield depth
        age = GaugeMetricFamily(
            "ctnode_oldest_queued_job_age_seconds",
            "Age of the oldest queued job; 0 when none is queued (whole installation)",
        )
        age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)
        yield age


# Counters that are counts of one kind of job-log line: kind -> (metric name, help).
EVENT_COUNTERS = {
    EventKind.ASSOCIATION_REJECTED: (
        "ctnode_associations_rejected",
        "Associations rejected (unknown peer, wrong host or called AE, too many; whole "
        "installation)",
    ),
    EventKind.SERIES_COMPLETE: (
        "ctnode_series_completed",
        "Times a series became complete (idle for its timeout; whole installation)",
    ),
    EventKind.SERIES_IGNORED: (
        "ctnode_series_ignored",
        "Complete series that matched no routing rule (whole installation)",
    ),
    EventKind.DELIVERY_FAILED: (
        "ctnode_deliveries_failed",
        "Deliveries that failed for good (the retry policy gave up, or the job was "
        "superseded; whole installation)",
    ),
    EventKind.DELIVERY_RETRY_SCHEDULED: (
        "ctnode_delivery_retries",
        "Failed tries of a delivery that were scheduled again (whole installation)",
    ),
}


def _counter(
    name: str, documentation: str, samples: list[tuple[list[str], float]], labels=None
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels or [])
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _by_state(session: Session, column, enum_class, name: str, documentation: str) -> Metric:
    found = dict(session.execute(select(column, func.count()).group_by(column)).all())
    family = GaugeMetricFamily(name, documentation + " (whole installation)", labels=["state"])
    for member in enum_class:  # every state, zeros included, so a panel never lacks a line
        family.add_metric([member.value], int(found.get(member, 0)))
    return family


def existing_parent(path: Path) -> Path:
    """The path, or its nearest existing parent (disk_usage needs an existing path)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def make_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): the node's families plus
    the process's CPU, memory and Python version."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
