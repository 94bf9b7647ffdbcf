"""`ctnode serve`: wires the stages of the node into one process and runs them until stopped.

The stages are components with start()/stop(), started in order and stopped in reverse: the
sender, the worker, the scheduler (completion + routing, sending), the receiver, and last the
HTTP server when [http] is enabled, so the node accepts instances only once everything behind
it runs, and on shutdown stops accepting first, then lets the worker finish its job.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node import claims, jobs, log_redaction
from node.config import Settings
from node.db import check_postgresql_durability, init_db, make_session_factory
from node.logformat import JsonLineFormatter
from node.receive import Receiver
from node.scheduler import Scheduler
from node.send import Sender
from node.send import release_dead_local as release_dead_local_deliveries
from node.spool import remove_stale_temp_files
from node.spool_recovery import register_unrecorded_instances

LOG = logging.getLogger("ctnode.service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PRIVATE_FOLDER_MODE = 0o700
# Files and folders the node creates hold patient data: readable by its own user only. The
# modules that create them set their modes explicitly; the umask covers anything else
# (a library's temporary file, a folder a later change adds).
SERVE_UMASK = 0o077
# How often the main thread wakes to run a signal handler that another thread received.
SIGNAL_POLL_S = 0.5


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
        self.http = None  # node.http.server.StatusServer when [http] enabled
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
        components += [self.scheduler, self.receiver]
        if self.settings.http.enabled:
            components.append(self._status_server(sessions))
        return components

    def _status_server(self, sessions: sessionmaker[Session]) -> Component:
        """/metrics, /healthz and the status page ([http]); started last, so its health
        check answers once everything it checks runs, and stopped first."""
        from node.http.server import StatusServer

        receiver, worker = self.receiver, self.worker

        def listener_address() -> tuple[str, int] | None:
            try:
                return receiver.address
            except RuntimeError:  # not started, or stopped
                return None

        model_loaded = worker.pipelines["calcium"].models_loaded if worker is not None else None
        self.http = StatusServer(self.settings, sessions, listener_address, model_loaded)
        return self.http

    def start(self) -> None:
        """Migrate the database, tidy the spool, start every component; raise if one fails
        (the ones already started are stopped again)."""
        storage = self.settings.storage
        self.engine = init_db(storage.database_url)
        LOG.info("database %s at the newest schema", self.engine.url.render_as_string())
        for problem in check_postgresql_durability(self.engine):
            LOG.warning("%s: commits may be lost in a crash of the database server", problem)
        self.sessions = make_session_factory(self.engine)
        Path(storage.spool_dir).mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        outbox = Path(self.settings.results.outbox_dir)
        outbox.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        removed = remove_stale_temp_files(storage.spool_dir)
        if removed:
            LOG.warning("removed %d partial files left in the spool by an earlier crash", removed)
        recovered = register_unrecorded_instances(Path(storage.spool_dir), self.sessions)
        if recovered:
            LOG.warning("registered %d spool files that had no database row", recovered)
        self._release_dead_local_claims(self.sessions)
        try:
            for component in self._build_components(self.sessions):
                component.start()
                self.components.append(component)
        except BaseException:
            self.stop()
            raise
        LOG.info("ctnode started")

    @staticmethod
    def _release_dead_local_claims(sessions: sessionmaker[Session]) -> None:
        """Take back at once the jobs and deliveries that an ended process of this host held
        (e.g. this node before a kill -9), instead of waiting for their heartbeat or lease."""
        me = claims.current()
        for job_id in jobs.release_dead_local(sessions, me):
            LOG.warning("job %d was held by an ended process of this host: queued again", job_id)
        for delivery_id in release_dead_local_deliveries(sessions, me):
            LOG.warning("delivery %d was held by an ended process of this host: due", delivery_id)

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


def wait_for(stop: threading.Event) -> None:
    """Block the main thread until `stop` is set by a signal handler.

    Never a bare stop.wait(): the kernel may deliver SIGTERM to any of the process's threads,
    and Python runs the handler only when the main thread next executes bytecode; a main thread
    blocked in an untimed wait would sleep on forever (seen as a node ignoring SIGTERM once in
    a few dozen starts)."""
    while not stop.wait(SIGNAL_POLL_S):
        pass


def configure_logging(level: int = logging.INFO, fmt: str = "text") -> None:
    """Log lines: "text" to stderr, or "json" (JSON lines, node.logformat) to stdout, where
    journald and container runtimes collect them. Replaces any earlier set-up. Python warnings
    go through the log too, and in "json" an exception escaping a thread is logged as one
    record instead of a traceback printed across lines. The INFO lines of pynetdicom (one per
    DIMSE message) and of alembic (plugin set-up) are muted."""
    if fmt == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonLineFormatter())
        threading.excepthook = _log_thread_exception
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    # On the handlers, not the loggers: a logger's filter never sees its children's records
    # (pynetdicom logs as pynetdicom.utils, pynetdicom.dimse, ...). It withholds the values a
    # peer sent (node.log_redaction), Python warnings included.
    log_redaction.install(logging.getLogger().handlers)
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # APScheduler logs every run at INFO and a skipped overlapping run as a WARNING; both are
    # normal here (a long send pass, or a wake-up while one runs).
    logging.getLogger("apscheduler").setLevel(max(level, logging.ERROR))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    LOG.error(
        "unhandled %s in thread %s",
        args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def serve(settings: Settings) -> None:
    """Run the node in the foreground until SIGTERM or SIGINT, logging as [logging] says."""
    os.umask(SERVE_UMASK)
    configure_logging(fmt=settings.logging.format)
    service = Service(settings)
    with stop_on_signals() as stop:
        service.start()
        try:
            wait_for(stop)
        finally:
            service.stop()
