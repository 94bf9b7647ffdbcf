"""A node killed with SIGKILL takes its own work back at the next start, at once.

A real `ctnode serve` (calcium model, CPU) gets a series from storescu; while its job runs the
process is killed (kill -9). The restarted node re-queues the job before it accepts anything
(`job.requeued`: the claiming pid ended) and runs it again, instead of waiting [worker]
stale_after_s (120 s). The results then go to a destination that accepts the connection and
never answers, so the send hangs; the node is killed again mid-send, and the next start makes
the delivery due at once (`delivery.released`) instead of after its lease (timeout_s x
(results + 2) = 150 s here). A second node started beside the live one, on the same database,
leaves the live node's delivery alone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import claims
from tests.integration.test_flow_dcmtk import make_phantom, series_uid, storescu
from tests.nodeproc import NodeProcess, free_port, wait_for
from tests.tools import require_tool

SEND_TIMEOUT_S = 30  # a delivery's lease is this x (results + 2): far beyond the test's waits
RESUME_WITHIN_S = 30  # from the restart's "ctnode started" (the first claim loads the model)


@pytest.fixture
def silent_destination() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes them) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server.getsockname()[1]


def job_row(node: NodeProcess, uid: str) -> tuple | None:
    rows = node.query(
        "SELECT jobs.id, jobs.state, jobs.attempts, jobs.claim_pid FROM jobs "
        "JOIN series ON series.id = jobs.series_id WHERE series.series_uid = ?",
        uid,
    )
    return rows[0] if rows else None


def events(node: NodeProcess, kind: str) -> list[str]:
    return [m for (m,) in node.query("SELECT message FROM events WHERE kind = ?", kind)]


def test_a_node_killed_mid_job_and_mid_send_resumes_at_once(
    tmp_path: Path, weights: Path, silent_destination: int
) -> None:
    require_tool("storescu", "dcmtk")
    files = make_phantom(tmp_path / "phantom", 21, 48)
    uid = series_uid(files)
    node = NodeProcess(
        tmp_path / "node",
        free_port(),
        sections={
            "series": {"complete_after_s": 1, "check_interval_s": 0.5},
            "calcium": {"weights_dir": str(weights), "device": "cpu"},
            "send": {"timeout_s": SEND_TIMEOUT_S, "check_interval_s": 0.5},
        },
        lists={
            "peers": [{"name": "m", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 1}],
            "routes": [{"name": "calcium", "pipeline": "calcium"}],
            "destinations": [
                {
                    "name": "silent",
                    "ae_title": "PACS",
                    "host": "127.0.0.1",
                    "port": silent_destination,
                }
            ],  # fmt: skip
        },
    )
    beside = NodeProcess(tmp_path / "beside", free_port())
    try:
        node.start()
        storescu(node, files)
        row = wait_for(
            lambda: (r := job_row(node, uid)) and r[1] == "running" and r,
            120,
            "the job to run",
            poll_s=0.05,
        )
        job_id, _, attempts, first_pid = row
        assert attempts == 1 and first_pid == node.process.pid
        node.kill()  # SIGKILL, mid-job
        assert job_row(node, uid)[1] == "running"  # as the dead process left it

        restarted = time.monotonic()
        node.start()
        started_s = time.monotonic() - restarted
        # Re-queued by the start itself, before the node accepted anything.
        (requeued,) = events(node, "job.requeued")
        assert f"pid {first_pid} ended" in requeued and "at once" in requeued
        wait_for(
            lambda: job_row(node, uid)[2] == 2,
            RESUME_WITHIN_S,
            "the job's second attempt",
            poll_s=0.1,
        )
        resumed_s = time.monotonic() - restarted
        print(f"\njob: restart {started_s:.1f} s, running again {resumed_s:.1f} s after it")

        # The results are being sent to the silent destination: kill the node mid-send.
        delivery = wait_for(
            lambda: node.query(
                "SELECT id, attempts, claim_pid FROM deliveries WHERE job_id = ? AND "
                "claim_pid IS NOT NULL",
                job_id,
            ),
            120,
            "the delivery to be claimed",
            poll_s=0.1,
        )
        ((delivery_id, delivery_attempts, sender_pid),) = delivery
        assert sender_pid == node.process.pid and delivery_attempts == 1
        node.kill()
        ((lease_end,),) = node.query(
            "SELECT next_attempt_at FROM deliveries WHERE id = ?", delivery_id
        )
        restarted = time.monotonic()
        node.start()
        (released,) = events(node, "delivery.released")
        assert f"#{delivery_id}" in released and f"pid {sender_pid} ended" in released
        wait_for(
            lambda: (
                node.query("SELECT attempts FROM deliveries WHERE id = ?", delivery_id)[0][0] == 2
            ),
            RESUME_WITHIN_S,
            "the delivery's second try",
            poll_s=0.1,
        )
        print(
            f"delivery: tried again {time.monotonic() - restarted:.1f} s after the restart "
            f"(its lease ran to {lease_end} UTC)"
        )
        ((job_state, job_attempts),) = node.query(
            "SELECT state, attempts FROM jobs WHERE id = ?", job_id
        )
        assert (job_state, job_attempts) == ("sending", 2)  # not run a third time

        # A second node on this host, on the same database, while the first one sends: it
        # must not take the live node's delivery, neither at its start nor while it runs.
        beside.sections = {
            "storage": {"database_url": f"sqlite:///{node.database}",
                        "spool_dir": str(node.folder / "spool")},
            "results": {"outbox_dir": str(node.folder / "outbox")},
            "worker": {"enabled": False},
            "send": {"check_interval_s": 0.5},
        }  # fmt: skip
        beside.lists = node.lists
        beside.start()
        time.sleep(claims.LOCAL_CHECK_INTERVAL_S + 1)  # past its sender's first look
        assert node.query(
            "SELECT attempts, claim_pid FROM deliveries WHERE id = ?", delivery_id
        ) == [(2, node.process.pid)]
        assert len(events(node, "delivery.released")) == 1
    finally:
        node.kill()
        beside.kill()
