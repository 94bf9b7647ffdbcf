"""The job queue on a real SQLite file: exclusive claims, heartbeats, retries, stale claims."""

from __future__ import annotations

import threading
from datetime import timedelta

from node import jobs
from node.admin import show_job, timeline
from node.db import (
    DeliveryState,
    Job,
    JobState,
    utcnow,
    write_session,
)
from node.series import complete_and_route
from tests.unit.node.test_series import _receive, calcium_only


def test_claims_are_exclusive_and_the_lifecycle_is_logged(node) -> None:
    settings, sessions = node
    settings = calcium_only(settings)
    _receive(settings, sessions, "1.2.3.8", 20, at=utcnow() - timedelta(seconds=6))
    (job_id,) = complete_and_route(settings, sessions)
    claims: list = []
    threads = [
        threading.Thread(target=lambda n=n: claims.append(jobs.claim_next(sessions, f"w{n}")))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [c for c in claims if c is not None]
    assert len(taken) == 1 and taken[0].id == job_id
    worker = next(f"w{n}" for n in range(4) if jobs.heartbeat(sessions, job_id, f"w{n}"))
    assert not jobs.heartbeat(sessions, job_id, "someone-else")
    output = jobs.OutputFile("sr", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9.1", "1.2.9", "p", 1)
    assert jobs.finish(sessions, job_id, worker, [output], ["pacs"]) == JobState.SENDING
    with write_session(sessions) as session:
        job = session.get(Job, job_id)
        (delivery,) = job.deliveries
        delivery.state = DeliveryState.FAILED
        delivery.last_error = "no connection"
        jobs.settle_after_delivery(session, job)
        assert job.state == JobState.FAILED and job.retryable
    assert "re-queued" in jobs.retry(sessions, job_id)
    with sessions() as session:
        shown = show_job(session, job_id)
    assert [s["state"] for s in shown["stages"]] == [
        "queued",
        "running",
        "sending",
        "failed",
        "sending",
    ]
    assert shown["stages"][-1]["ongoing"] and shown["deliveries"][0]["state"] == "pending"
    assert timeline([], None) == []


def test_a_stale_claim_goes_back_to_the_queue(node) -> None:
    settings, sessions = node
    settings = calcium_only(settings)
    _receive(settings, sessions, "1.2.3.9", 20, at=utcnow() - timedelta(seconds=6))
    (job_id,) = complete_and_route(settings, sessions)
    assert jobs.claim_next(sessions, "dead-worker").id == job_id
    with write_session(sessions) as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=600)
    assert jobs.release_stale(sessions, 120) == [job_id]
    assert jobs.claim_next(sessions, "live-worker").attempt == 2
    # The dead worker's late answer is not taken.
    assert jobs.fail(sessions, job_id, "dead-worker", "x", retryable=True) == JobState.RUNNING
