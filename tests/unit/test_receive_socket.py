"""The listener's association socket: exact PDU reads in one buffer, waiting for data in select()."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association

import node.receive_socket as receive_socket_module
from node.receive_socket import WAIT_S, ReceiveSocket


@pytest.fixture
def connected() -> tuple[ReceiveSocket, socket.socket]:
    ours, peer = socket.socketpair()
    receive_socket = ReceiveSocket(Association(AE(), MODE_ACCEPTOR), client_socket=ours)
    yield receive_socket, peer
    receive_socket.close()
    peer.close()


def test_a_pdu_sent_in_pieces_is_read_whole_and_exactly(connected) -> None:
    receive_socket, peer = connected
    pdu = bytes(range(256)) * 4096  # 1 MB, larger than the socket buffers: read while sent
    trailing = b"next PDU"

    def send_in_pieces() -> None:
        for start in range(0, len(pdu), 100_000):
            peer.sendall(pdu[start : start + 100_000])
            time.sleep(0.001)
        peer.sendall(trailing)

    sender = threading.Thread(target=send_in_pieces)
    sender.start()
    data = receive_socket.recv(len(pdu))
    sender.join()
    assert isinstance(data, bytearray)
    assert data == pdu
    assert receive_socket.recv(len(trailing)) == trailing  # nothing read beyond what was asked


def test_a_connection_closed_mid_pdu_gives_the_bytes_that_came(connected) -> None:
    receive_socket, peer = connected
    peer.sendall(b"\x04\x00\x00\x00")
    peer.close()
    assert receive_socket.recv(6) == b"\x04\x00\x00\x00"  # pynetdicom then reports the short read


def test_ready_waits_for_data_and_says_so(connected, monkeypatch) -> None:
    receive_socket, peer = connected
    assert receive_socket.ready is False  # nothing sent: False once WAIT_S has passed
    # A byte that arrives while `ready` waits is reported by that same call (pynetdicom's own
    # socket answers at once and would say False here).
    monkeypatch.setattr(receive_socket_module, "WAIT_S", 2.0)
    threading.Timer(0.05, peer.sendall, args=(b"\x05",)).start()
    assert receive_socket.ready is True
    assert receive_socket.recv(1) == b"\x05"


def test_ready_on_a_closed_socket_is_false_without_spinning(connected) -> None:
    receive_socket, _ = connected
    receive_socket.close()
    start = time.monotonic()
    assert receive_socket.ready is False
    # It sleeps WAIT_S: the DUL loop, whose own sleep the node sets to 0, must not spin.
    assert time.monotonic() - start >= WAIT_S * 0.9


def test_a_silent_peer_inside_a_pdu_times_the_read_out(connected) -> None:
    receive_socket, peer = connected
    receive_socket.silence_timeout_s = 0.2
    peer.sendall(b"\x01\x00")  # part of a header, then nothing
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        receive_socket.recv(6)
    assert 0.15 < time.monotonic() - start < 2


def test_a_trickling_peer_is_cut_off_at_the_deadline(connected) -> None:
    receive_socket, peer = connected
    receive_socket.silence_timeout_s = 5.0  # never silent that long
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            peer.sendall(b"\x00")

    threading.Thread(target=trickle, daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            receive_socket.recv(1000, deadline=start + 0.3)
    finally:
        stop.set()
    assert time.monotonic() - start < 2


def test_pdu_length_limits_follow_the_pdu_type() -> None:
    from node.receive_socket import ASSOCIATE_LIMIT_BYTES, P_DATA_SLACK_BYTES, pdu_length_limit

    assert pdu_length_limit(0x01, 1 << 20) == ASSOCIATE_LIMIT_BYTES
    assert pdu_length_limit(0x04, 1 << 20) == (1 << 20) + P_DATA_SLACK_BYTES
    assert all(pdu_length_limit(kind, 1 << 20) == 4 for kind in (0x03, 0x05, 0x06, 0x07))
    assert pdu_length_limit(0x08, 1 << 20) is None and pdu_length_limit(0x00, 0) is None
