"""/healthz: whether this node process can do its work now.

Each check answers ok or not with a short detail (no patient data); the node is healthy when
every check that applies is ok (HTTP 200), otherwise 503, so a container health check, a
load balancer or a probe can act on the status code alone:

- listener: the DICOM port accepts a TCP connection (a bare connect and close, see
  `listener_check`);
- database: `SELECT 1` answers;
- disk: the spool's file system has at least [storage] min_free_mb free (below it the
  receiver refuses instances with 0xA700);
- model: the calcium model is loaded; only where this process runs the worker. It is false
  while the worker still loads it at start, and while the weights are missing.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.http.metrics import existing_parent

CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def listener_check(address: tuple[str, int] | None) -> Check:
    """Whether the listener accepts a TCP connection: a bare connect and close. The receiver
    counts association slots from the A-ASSOCIATE-RQ and closes a connection that sends no PDU
    at once, so the probe takes no slot, writes no job-log line and no log line (the
    integration test checks that no association is left open at shutdown). An all-interfaces
    bind is reached on loopback."""
    if address is None:
        return Check(False, "the DICOM listener is not running")
    host, port = address
    if ipaddress.ip_address(host).is_unspecified:
        host = "::1" if ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        return Check(False, f"port {port} does not accept connections ({error.strerror or error})")
    return Check(True, f"port {port} accepts connections")


def database_check(sessions: sessionmaker[Session]) -> Check:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        return Check(False, f"unreachable ({type(error).__name__})")
    return Check(True, "reachable")


def disk_check(spool_dir: Path, min_free_mb: int) -> Check:
    free_mb = shutil.disk_usage(existing_parent(spool_dir)).free // (1024 * 1024)
    verdict = "at least" if free_mb >= min_free_mb else "below"
    return Check(free_mb >= min_free_mb, f"{free_mb} MB free, {verdict} min_free_mb {min_free_mb}")


class Health:
    """The checks of one node process. `listener_address` and `model_loaded` are asked at
    each request (None: this process runs no worker, so there is no model check)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        listener_address: Callable[[], tuple[str, int] | None],
        model_loaded: Callable[[], bool] | None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.listener_address = listener_address
        self.model_loaded = model_loaded

    def report(self) -> tuple[bool, dict]:
        """(healthy, the JSON body)."""
        storage = self.settings.storage
        checks = {
            "listener": listener_check(self.listener_address()),
            "database": database_check(self.sessions),
            "disk": disk_check(Path(storage.spool_dir), storage.min_free_mb),
        }
        if self.model_loaded is not None:
            loaded = self.model_loaded()
            checks["model"] = Check(loaded, "calcium model loaded" if loaded else "not loaded")
        healthy = all(check.ok for check in checks.values())
        body = {
            "status": "ok" if healthy else "unhealthy",
            "checks": {name: asdict(check) for name, check in checks.items()},
        }
        return healthy, body
