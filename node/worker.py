"""The worker: takes queued jobs one at a time and runs their pipeline.

One thread per worker. A job is claimed atomically (node.jobs), kept alive by a heartbeat
thread while it runs, and ends `sending` (results recorded, one delivery per destination),
`done` (no destinations), queued again (a transient failure, up to [worker] max_attempts),
or `failed` with the reason and whether a retry makes sense. Nothing a series contains can
stop the worker: every error ends the job, not the thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node import claims, jobs
from node.config import Settings
from node.db import Instance, JobState, Series, utcnow
from node.pipelines import registry
from node.pipelines.protocol import Report
from node.pipelines.registry import UnknownPipelineError
from node.pipelines.series_reading import BadSeriesError, SeriesFiles

LOG = logging.getLogger("ctnode.worker")
STOP_GRACE_S = 120.0  # a CPU scoring run takes seconds; beyond this the claim is released


def worker_name() -> str:
    """Who holds a claim, as the job log shows it: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Refreshes a running job's heartbeat every `interval_s` in a thread of its own."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: int, worker: str, interval_s: float
    ):
        self._args = (sessions, job_id, worker)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not jobs.heartbeat(*self._args):
                    return  # superseded or taken back: finish() will discard the results
            except SQLAlchemyError as error:
                LOG.warning("heartbeat of job %d failed: %s", self._args[1], type(error).__name__)


def _traceback_without_values(error: BaseException) -> str:
    """Where an unexpected error happened (files, lines, code), not its message, which could
    quote a header value."""
    return "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))


class Worker:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        on_results: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.name = worker_name()
        self.claimant = claims.current()
        self.pipelines = registry.build(settings)
        self.on_results = on_results  # the sender's wake-up, so results go out at once
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: int | None = None
        self._last_stale_check = 0.0
        self._last_local_check = 0.0

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)
        self._thread.start()
        LOG.info("worker %s started", self.name)

    def wake(self) -> None:
        """Look at the queue now (new jobs were made)."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the running job (up to STOP_GRACE_S), then stop; a job still running after
        that is put back into the queue for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(STOP_GRACE_S)
        current = self._current
        if self._thread.is_alive() and current is not None:
            LOG.warning("job %d still running at shutdown: released to the queue", current)
            jobs.fail(
                self.sessions,
                current,
                self.name,
                "the node stopped while the job ran",
                retryable=True,
                retry_at=utcnow(),
            )
        self._thread = None
        LOG.info("worker stopped")

    def _load_models(self) -> None:
        """Load the models before the first job, so the first series is not slower than the
        rest (torch and the weights take seconds); a missing model is reported now, and each
        job then fails with the reason until it is installed. Each pipeline loads what it will
        use (the organ model only when a route or the calcium heart check needs it)."""
        for pipeline in self.pipelines.values():
            pipeline.preload()

    def _loop(self) -> None:
        self._load_models()
        while not self._stopping.is_set():
            try:
                self._release_stale()
                claimed = jobs.claim_next(self.sessions, self.name, self.claimant)
            except SQLAlchemyError as error:
                LOG.error("job queue unavailable: %s", type(error).__name__)
                claimed = None
            if claimed is None:
                self._wake.wait(self.settings.worker.poll_s)
                self._wake.clear()
                continue
            self.run_job(claimed)

    def _release_stale(self) -> None:
        """Take back jobs of dead workers: at once those of this host's ended processes (a
        cheap read every few seconds), by heartbeat age those of other hosts."""
        now = time.monotonic()
        if now - self._last_local_check >= claims.LOCAL_CHECK_INTERVAL_S:
            self._last_local_check = now
            for job_id in jobs.release_dead_local(self.sessions, self.claimant):
                LOG.warning("job %d: its worker on this host ended; back in the queue", job_id)
        if now - self._last_stale_check < self.settings.worker.stale_after_s / 4:
            return
        self._last_stale_check = now
        for job_id in jobs.release_stale(self.sessions, self.settings.worker.stale_after_s):
            LOG.warning("job %d: its worker stopped heart-beating; back in the queue", job_id)

    def series_files(self, series_id: int) -> SeriesFiles:
        spool = Path(self.settings.storage.spool_dir)
        with self.sessions() as session:
            series = session.get(Series, series_id)
            paths = session.scalars(
                select(Instance.path).where(Instance.series_id == series_id).order_by(Instance.id)
            )
            files = [spool / path for path in paths]
            folder = spool / series.study_uid / series.series_uid
            return SeriesFiles(series.series_uid, folder, files)

    def run_job(self, claimed: jobs.ClaimedJob) -> JobState:
        """Run one claimed job to its next state."""
        self._current = claimed.id
        LOG.info("job %d (%s) attempt %d started", claimed.id, claimed.pipeline, claimed.attempt)
        started = time.perf_counter()

        def report(stage: str, message: str) -> None:
            LOG.info("job %d %s: %s", claimed.id, stage, message)
            jobs.record_stage(self.sessions, claimed.id, stage, message)

        try:
            with Heartbeat(self.sessions, claimed.id, self.name, self.settings.worker.heartbeat_s):
                files = self.series_files(claimed.series_id)
                outputs = self.run_pipeline(claimed, files, report)
            destinations = [d.name for d in self.settings.destinations]
            state = jobs.finish(self.sessions, claimed.id, self.name, outputs, destinations)
            LOG.info(
                "job %d %s after %.1f s", claimed.id, state.value, time.perf_counter() - started
            )
            if state == JobState.SENDING and self.on_results is not None:
                self.on_results()
            return state
        except BadSeriesError as error:
            return self._fail(claimed, f"bad series: {error}", retryable=False)
        except UnknownPipelineError as error:
            # Made by a newer node sharing the database: a retry there (or after upgrading
            # this one) can run it.
            return self._fail(claimed, str(error), retryable=True)
        except Exception as error:  # noqa: BLE001 - a job's failure never stops the worker
            return self._fail_unexpected(claimed, error)
        finally:
            self._current = None

    def run_pipeline(
        self, claimed: jobs.ClaimedJob, files: SeriesFiles, report: Report
    ) -> list[jobs.OutputFile]:
        """The job's pipeline, looked up by the name its route gave it."""
        pipeline = registry.lookup(self.pipelines, claimed.pipeline)
        return pipeline.run(claimed.id, files, report)

    def _fail_unexpected(self, claimed: jobs.ClaimedJob, error: Exception) -> JobState:
        from models.calcium.inference import ModelFileError
        from models.organs.registry import ModelFileError as OrganModelFileError

        if isinstance(error, ModelFileError | OrganModelFileError):
            # Needs a person (install or restore the weights), then `ctnode jobs retry`.
            return self._fail(claimed, f"model not usable: {error}", retryable=True)
        name = type(error).__name__
        if isinstance(error, OSError | SQLAlchemyError):
            reason = f"{name}: {error.strerror}" if isinstance(error, OSError) else name
            if claimed.attempt < self.settings.worker.max_attempts:
                retry_at = utcnow() + timedelta(seconds=self.settings.worker.retry_after_s)
                return self._fail(claimed, reason, retryable=True, retry_at=retry_at)
            return self._fail(claimed, f"{reason} (after {claimed.attempt} attempts)", True)
        LOG.error(
            "job %d: unexpected %s in\n%s", claimed.id, name, _traceback_without_values(error)
        )
        return self._fail(claimed, f"internal error ({name})", retryable=True)

    def _fail(
        self,
        claimed: jobs.ClaimedJob,
        reason: str,
        retryable: bool,
        retry_at: datetime | None = None,
    ) -> JobState:
        LOG.warning("job %d failed: %s", claimed.id, reason)
        try:
            return jobs.fail(
                self.sessions, claimed.id, self.name, reason, retryable=retryable, retry_at=retry_at
            )
        except SQLAlchemyError as db_error:
            # The heartbeat stops with the job, so the claim goes stale and is taken back.
            LOG.error(
                "job %d: could not record the failure (%s)", claimed.id, type(db_error).__name__
            )
            return JobState.RUNNING
