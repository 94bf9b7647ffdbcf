"""Claims name their process (host key, pid, start time): an ended process of this host loses
its jobs and deliveries at once, a live one (another `ctnode serve` beside this one) keeps them,
and another host's claims wait for their heartbeat or lease, as before.

The processes are real: a `sleep` that runs, and one that was killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from node import claims, jobs
from node.claims import Claimant
from node.db import (
    Delivery,
    DeliveryState,
    Event,
    Job,
    JobState,
    add_instance,
    init_db,
    make_session_factory,
    utcnow,
    write_session,
)
from node.send import release_dead_local as release_dead_deliveries

pytestmark = pytest.mark.skipif(
    not claims.host_key(), reason="no /proc: claims are released by staleness only"
)


def _process_claimant(process: subprocess.Popen) -> Claimant:
    me = claims.current()
    started = claims.start_time(process.pid)
    assert started is not None
    return Claimant(me.host, process.pid, started)


@pytest.fixture
def live() -> Iterator[Claimant]:
    """A process of this host that runs throughout the test."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield _process_claimant(process)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead() -> Claimant:
    """A process of this host killed with SIGKILL (like a node after kill -9)."""
    process = subprocess.Popen(["sleep", "300"])
    holder = _process_claimant(process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return holder


@pytest.fixture
def sessions(tmp_path: Path):
    engine = init_db(f"sqlite:///{tmp_path / 'ctnode.db'}")
    yield make_session_factory(engine)
    engine.dispose()


def test_start_time_tells_a_running_process_from_an_ended_or_reused_pid(live, dead) -> None:
    me = claims.current()
    assert me.pid == os.getpid() and me.started == claims.start_time(os.getpid()) > 0
    assert claims.start_time(dead.pid) is None
    assert not claims.is_dead_on_this_host(me, me)
    assert not claims.is_dead_on_this_host(live, me)
    assert claims.is_dead_on_this_host(dead, me)
    # The pid of a live process, but another start time: the claimant's pid was reused.
    assert claims.is_dead_on_this_host(replace(live, started=live.started - 1), me)
    # Another host's claim is never judged by this host's pids.
    assert not claims.is_dead_on_this_host(replace(dead, host="elsewhere 1 pid:[1]"), me)


def _running_job(sessions, series_id: int, holder: Claimant) -> int:
    with write_session(sessions) as session:
        job = Job(series_id=series_id, pipeline="calcium", state=JobState.QUEUED)
        session.add(job)
        session.flush()
        job_id = job.id
    assert jobs.claim_next(sessions, f"w{holder.pid}", holder).id == job_id
    return job_id


def _series(sessions) -> int:
    with write_session(sessions) as session:
        instance = add_instance(
            session,
            study_uid="1.2",
            series_uid="1.2.3",
            sop_instance_uid="1.2.3.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="CT",
            instance_number=1,
            path="1.2/1.2.3/1.2.3.1.dcm",
            size_bytes=1,
            sender_ae="STORESCU",
        )
        return instance.series_id


def test_only_jobs_of_ended_processes_of_this_host_are_released(sessions, live, dead) -> None:
    me = claims.current()
    series_id = _series(sessions)
    of_dead = _running_job(sessions, series_id, dead)
    of_live = _running_job(sessions, series_id, live)  # another ctnode beside this one
    of_me = _running_job(sessions, series_id, me)
    elsewhere = replace(dead, host="other-host 0000 pid:[1]")
    of_other_host = _running_job(sessions, series_id, elsewhere)

    assert jobs.release_dead_local(sessions, me) == [of_dead]
    assert jobs.release_dead_local(sessions, me) == []  # done once
    with sessions() as session:
        states = {i: session.get(Job, i) for i in (of_dead, of_live, of_me, of_other_host)}
        assert states[of_dead].state == JobState.QUEUED
        assert states[of_dead].claimed_by is None and states[of_dead].claim_pid is None
        for kept in (of_live, of_me, of_other_host):
            assert states[kept].state == JobState.RUNNING and states[kept].claim_pid
        (event,) = session.scalars(
            select(Event).where(Event.job_id == of_dead, Event.kind == "job.requeued")
        )
        assert f"pid {dead.pid} ended" in event.message and "at once" in event.message
    # The released job is claimed again (attempt 2); the other host's still waits for
    # its heartbeat to go stale.
    assert jobs.claim_next(sessions, "new", me).id == of_dead
    with write_session(sessions) as session:
        session.get(Job, of_other_host).heartbeat_at = utcnow() - timedelta(seconds=600)
    assert jobs.release_stale(sessions, 120) == [of_other_host]


def test_only_deliveries_of_ended_processes_of_this_host_are_due_again(
    sessions, live, dead
) -> None:
    me = claims.current()
    series_id = _series(sessions)
    job_id = _running_job(sessions, series_id, me)
    assert jobs.finish(sessions, job_id, f"w{me.pid}", [], ["a", "b", "c"]) == JobState.SENDING
    lease_end = utcnow() + timedelta(seconds=150)
    with write_session(sessions) as session:
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        for delivery, holder in zip(deliveries, (dead, live, me), strict=True):
            delivery.attempts = 1
            delivery.next_attempt_at = lease_end  # what a claim's lease sets
            delivery.claimed_by = f"host:{holder.pid}"
            delivery.claim_host, delivery.claim_pid = holder.host, holder.pid
            delivery.claim_started = holder.started
        ids = [d.id for d in deliveries]

    assert release_dead_deliveries(sessions, me) == [ids[0]]
    with sessions() as session:
        released, of_live, of_me = (session.get(Delivery, i) for i in ids)
        assert released.state == DeliveryState.PENDING and released.claim_pid is None
        assert released.next_attempt_at <= utcnow()
        assert of_live.next_attempt_at == of_me.next_attempt_at == lease_end
        assert of_live.claim_pid == live.pid and of_me.claim_pid == me.pid
        (event,) = session.scalars(select(Event).where(Event.kind == "delivery.released"))
        assert event.delivery_id == ids[0] and "due again at once" in event.message
