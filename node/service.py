"""`ctnode serve`: wires the stages of the node into one process and runs them until stopped.

The stages are components with start()/stop(), started in order and stopped in reverse: the
sender, the worker, the scheduler (completion + routing, sending) and last the receiver, so the
node accepts instances only once everything behind it runs, and on shutdown stops accepting
first, then lets the worker finish its job.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node import log_redaction
from node.config import Settings
from node.db import init_db, make_session_factory
from node.receive import Receiver
from node.scheduler import Scheduler
from node.send import Sender
from node.spool import remove_stale_temp_files
from node.spool_recovery import register_unrecorded_instances

LOG = logging.getLogger("ctnode.service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class Service:
    """The whole node in one process: database, spool and the stages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.receiver: Receiver | None = None
        self.worker = None
        self.scheduler: Scheduler | None = None
        self.components: list[Component] = []

    def _build_components(self, sessions: sessionmaker[Session]) -> list[Component]:
        from node.worker import Worker  # torch is imported only when a job runs

        sender = Sender(self.settings, sessions)
        self.scheduler = Scheduler(self.settings, sessions, sender)
        components: list[Component] = [sender]
        if self.settings.worker.enabled:
            self.worker = Worker(self.settings, sessions, on_results=self.scheduler.wake_sender)
            self.scheduler.on_jobs = self.worker.wake
            components.append(self.worker)
        self.receiver = Receiver(self.settings, sessions)
        return [*components, self.scheduler, self.receiver]

    def start(self) -> None:
        """Migrate the database, tidy the spool, start every component; raise if one fails
        (the ones already started are stopped again)."""
        storage = self.settings.storage
        self.engine = init_db(storage.database_url)
        LOG.info("database %s at the newest schema", self.engine.url.render_as_string())
        self.sessions = make_session_factory(self.engine)
        Path(storage.spool_dir).mkdir(parents=True, exist_ok=True)
        Path(self.settings.results.outbox_dir).mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(storage.spool_dir)
        if removed:
            LOG.warning("removed %d partial files left in the spool by an earlier crash", removed)
        recovered = register_unrecorded_instances(Path(storage.spool_dir), self.sessions)
        if recovered:
            LOG.warning("registered %d spool files that had no database row", recovered)
        try:
            for component in self._build_components(self.sessions):
                component.start()
                self.components.append(component)
        except BaseException:
            self.stop()
            raise
        LOG.info("ctnode started")

    def stop(self) -> None:
        """Stop the components in reverse order, then release the database."""
        while self.components:
            component = self.components.pop()
            try:
                component.stop()
            except Exception:
                LOG.exception("error while stopping %s", type(component).__name__)
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        LOG.info("ctnode stopped")


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT sets (main thread only); previous handlers come back."""
    stop = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        LOG.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines to stderr. The INFO lines of pynetdicom (one per DIMSE message) and of
    alembic (plugin set-up) are muted. What pynetdicom and pydicom print goes through
    node.log_redaction, which withholds the values a peer sent (Python warnings too, routed
    into logging for that)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.captureWarnings(True)
    # On the handlers, not the loggers: a logger's filter never sees its children's records
    # (pynetdicom logs as pynetdicom.utils, pynetdicom.dimse, ...).
    log_redaction.install(logging.getLogger().handlers)
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # APScheduler logs every run at INFO and a skipped overlapping run as a WARNING; both are
    # normal here (a long send pass, or a wake-up while one runs).
    logging.getLogger("apscheduler").setLevel(max(level, logging.ERROR))


def serve(settings: Settings) -> None:
    """Run the node in the foreground until SIGTERM or SIGINT."""
    service = Service(settings)
    with stop_on_signals() as stop:
        service.start()
        try:
            stop.wait()
        finally:
            service.stop()
