"""Who holds a claim on a job or a delivery, and whether that process still runs.

A claim records the claiming process as a `Claimant`: its host key, pid and start time. On the
same host a dead claimant is recognised at once: its pid has no /proc entry, is a zombie, or
belongs to a process with another start time (the pid was reused). A node restarted after a
kill -9 therefore takes its dead predecessor's work back in seconds instead of waiting for
[worker] stale_after_s or a delivery's lease (node.jobs.release_dead_local,
node.send.release_dead_local, both through release_dead_held below).

A pid means something only inside one pid namespace of one boot of one machine, so the host key
is hostname + boot id + pid namespace. Claims with another host key (another machine, another
container, the same container after a restart: a new pid namespace) still go by heartbeat
staleness and leases, as before. Where /proc is missing (not Linux) the host key is empty and
only staleness applies.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from node.db import write_session

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"
# How often (seconds) a running node looks for claims of dead processes on its own host; a
# plain read, and a write only when it finds one.
LOCAL_CHECK_INTERVAL_S = 5.0
_DEAD_STATES = {"Z", "X", "x"}  # zombie, dead: the process has ended, only its entry is left


@dataclass(frozen=True)
class Claimant:
    host: str  # "<hostname> <boot id> <pid namespace>", or "" where it cannot be known
    pid: int
    started: int  # start time in clock ticks after boot (/proc/<pid>/stat, field 22)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and
    parentheses, so the split is at the last ')'); None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot); None when it does not run."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in _DEAD_STATES:
        return None
    return int(fields[19])  # field 22 of the whole line: 3 (state) is fields[0]


def host_key() -> str:
    """This process's host key; "" where /proc does not say (pids are then not compared)."""
    try:
        boot_id = BOOT_ID.read_text().strip()
        pid_namespace = os.readlink(PROC / "self/ns/pid")
    except OSError:
        return ""
    return f"{socket.gethostname()} {boot_id} {pid_namespace}"


def current() -> Claimant:
    """The calling process as a claimant."""
    pid = os.getpid()
    host = host_key()
    started = start_time(pid) if host else None
    return Claimant(host, pid, started or 0)


def is_dead_on_this_host(claim: Claimant, me: Claimant) -> bool:
    """True only when the claim is this host's and its process has ended (or its pid now
    belongs to another process); False for this process, a live one, or another host's."""
    if not me.host or claim.host != me.host:
        return False
    if (claim.pid, claim.started) == (me.pid, me.started):
        return False
    return start_time(claim.pid) != claim.started


def claimant_of(row: Any) -> Claimant:
    """The claim a job or delivery row holds (its claim_host, claim_pid, claim_started)."""
    return Claimant(row.claim_host or "", row.claim_pid or 0, row.claim_started or 0)


def release_dead_held(
    sessions: sessionmaker[Session],
    model: Any,
    held_here: ColumnElement[bool],
    me: Claimant,
    release: Callable[[Session, Any, Claimant], None],
) -> list[int]:
    """Hand each row of `model` (Job or Delivery) that `held_here` selects and whose claimant
    is a process of this host that no longer runs to `release(session, row, holder)`, in one
    transaction; the ids released. Live processes and other hosts' claims are left alone."""
    if not me.host:
        return []
    # A plain read first (the usual answer is "none"): no write lock taken for nothing.
    with sessions() as session:
        dead = [row.id for row in session.scalars(select(model).where(held_here))
                if is_dead_on_this_host(claimant_of(row), me)]  # fmt: skip
    if not dead:
        return []
    released = []
    with write_session(sessions) as session:
        rows = select(model).where(held_here, model.id.in_(dead)).with_for_update(skip_locked=True)
        for row in session.scalars(rows):
            holder = claimant_of(row)
            if not is_dead_on_this_host(holder, me):
                continue  # claimed again meanwhile
            release(session, row, holder)
            released.append(row.id)
    return released
