"""The node in-process (node.service.Service): association limit, shutdown with a peer still
connected, a port already taken."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from node.config import Settings, load_settings
from node.db import Event
from node.receive_dimse import CappedDIMSE
from node.receive_socket import BoundedDUL, ReceiveSocket
from node.scu import nodelay_handlers
from node.service import Service
from tests.tools import require_tool


def _settings(tmp_path: Path, port: int = 0) -> Settings:
    return load_settings(
        environ={
            "CTNODE_NODE__PORT": str(port),
            "CTNODE_NODE__MAX_ASSOCIATIONS": "1",
            "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
            "CTNODE_STORAGE__DATABASE_URL": f"sqlite:///{tmp_path / 'ctnode.db'}",
        }
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(_settings(tmp_path))
    running.start()
    yield running
    running.stop()


def _hold_association(port: int):
    ae = AE(ae_title="ECHOSCU")  # a configured peer of the embedded defaults
    ae.add_requested_context(Verification)
    association = ae.associate(
        "127.0.0.1", port, ae_title="CTNODE", evt_handlers=nodelay_handlers()
    )
    assert association.is_established
    return association


def test_associations_beyond_the_limit_are_rejected_and_logged(service: Service) -> None:
    require_tool("echoscu", "dcmtk")
    port = service.receiver.address[1]
    held = _hold_association(port)
    try:
        proc = subprocess.run(
            ["echoscu", "-aec", "CTNODE", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert proc.returncode != 0
        assert "Rejected Transient" in proc.stdout + proc.stderr
    finally:
        held.release()
    with service.sessions() as session:
        messages = session.scalars(
            select(Event.message).where(Event.kind == "association.rejected")
        ).all()
    assert any("max_associations=1" in message for message in messages)


def test_stop_aborts_a_connected_peer_after_the_grace_time(service: Service) -> None:
    held = _hold_association(service.receiver.address[1])
    service.receiver.stop(grace_s=0.2)
    held.join(timeout=10)  # the peer's association thread ends when the A-ABORT arrives
    assert held.is_aborted and not held.is_established


def test_a_taken_port_fails_start_and_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = Service(_settings(tmp_path, taken.getsockname()[1]))
        with pytest.raises(OSError):
            service.start()
    assert service.components == [] and service.engine is None


@contextmanager
def _accepted_association(service: Service) -> Iterator[tuple[Association, Association]]:
    """(our requestor, the node's acceptor) of one held association, released afterwards."""
    held = _hold_association(service.receiver.address[1])
    try:
        server = service.receiver._server
        assert server is not None
        (accepted,) = server.active_associations
        yield held, accepted
    finally:
        held.release()


def test_accepted_connections_have_nagle_off(service: Service) -> None:
    """The node's answers are small writes; with Nagle on they could wait for a delayed ACK."""
    with _accepted_association(service) as (_, accepted):
        sock = accepted.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_accepted_connections_read_with_the_receive_socket(service: Service) -> None:
    """The tuning of node/receive_socket.py is in place (a pynetdicom upgrade could undo it)."""
    with _accepted_association(service) as (held, accepted):
        assert type(accepted.dul.socket) is ReceiveSocket
        assert type(accepted.dul) is BoundedDUL  # PDU lengths bounded, reads timed out
        assert type(accepted.dimse) is CappedDIMSE  # [storage] max_instance_mb applied
        assert accepted.dul._run_loop_delay == 0  # the waiting happens in ReceiveSocket.ready
        assert held.send_c_echo().Status == 0x0000  # and the association works through it


def test_connect_and_close_probes_leave_no_thread_behind(service: Service) -> None:
    """A probe's acceptor thread ends when the connection closes, not after the ACSE timeout
    (60 s by default), and a probe holds no association slot meanwhile."""
    server = service.receiver._server
    assert server is not None
    for _ in range(12):
        socket.create_connection(service.receiver.address, timeout=5).close()
    deadline = time.monotonic() + 5
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active_associations == []
    assert len(service.receiver.slots) == 0
    held = _hold_association(service.receiver.address[1])  # the one slot (max_associations=1)
    held.release()
