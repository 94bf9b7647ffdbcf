"""The periodic stages, run by an APScheduler BackgroundScheduler (3.x).

- `complete`: every [series] check_interval_s, series idle for their completion timeout are
  completed and routed into jobs (node.series); new jobs wake the worker at once.
- `send`: every [send] check_interval_s, due deliveries are sent (node.send); the back-off of
  a delivery lives in its next_attempt_at in the database, so it survives a restart.
- `retention`: every [retention] check_interval_s (first at start, which also finishes a purge
  a crash interrupted), delivered series older than keep_days are purged (node.retention);
  not scheduled with keep_days = 0.

Each job runs at most once at a time (max_instances=1) and missed runs are coalesced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.retention import purge
from node.send import Sender
from node.series import complete_and_route

LOG = logging.getLogger("ctnode.scheduler")
COMPLETE_JOB = "complete"
SEND_JOB = "send"
RETENTION_JOB = "retention"


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        sender: Sender | None,
        on_jobs: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sender = sender
        self.on_jobs = on_jobs  # the worker's wake-up
        self._scheduler: BackgroundScheduler | None = None

    def complete(self) -> None:
        made = complete_and_route(self.settings, self.sessions)
        if made and self.on_jobs is not None:
            self.on_jobs()

    def purge(self) -> None:
        try:
            purge(self.settings, self.sessions)
        except Exception:  # noqa: BLE001 - the next pass tries again; the node keeps running
            LOG.exception("retention pass failed; tried again in %g s",
                          self.settings.retention.check_interval_s)  # fmt: skip

    def start(self) -> None:
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True})
        scheduler.add_job(
            self.complete,
            "interval",
            seconds=self.settings.series.check_interval_s,
            id=COMPLETE_JOB,
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
        if self.sender is not None:
            scheduler.add_job(
                self.sender.send_due,
                "interval",
                seconds=self.settings.send.check_interval_s,
                id=SEND_JOB,
                max_instances=1,
                next_run_time=datetime.now(UTC),
            )
        if self.settings.retention.keep_days > 0:
            scheduler.add_job(
                self.purge,
                "interval",
                seconds=self.settings.retention.check_interval_s,
                id=RETENTION_JOB,
                max_instances=1,
                next_run_time=datetime.now(UTC),
            )
        scheduler.start()
        self._scheduler = scheduler
        LOG.info(
            "scheduler started: completion every %g s, sending every %g s",
            self.settings.series.check_interval_s,
            self.settings.send.check_interval_s,
        )

    def wake_sender(self) -> None:
        """Run the send job now instead of at its next interval."""
        if self._scheduler is not None and self.sender is not None:
            self._scheduler.modify_job(SEND_JOB, next_run_time=datetime.now(UTC))

    def stop(self) -> None:
        """Stop scheduling; waits for a running completion or send pass to end."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
            LOG.info("scheduler stopped")
