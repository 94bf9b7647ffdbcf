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
from node.receive_socket import WAIT_S, BoundedDUL, ReceiveSocket


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


@pytest.fixture
def reader() -> tuple[BoundedDUL, socket.socket]:
    """A BoundedDUL reading from one end of a socket pair (its thread not started)."""
    ours, peer = socket.socketpair()
    association = Association(AE(), MODE_ACCEPTOR)
    association.acceptor.maximum_length = 1 << 20
    association.set_socket(ReceiveSocket(association, client_socket=ours))
    association.dul.__class__ = BoundedDUL
    association.dul.socket.silence_timeout_s = 5.0
    yield association.dul, peer
    association.dul.socket.close()
    peer.close()


def _events(dul: BoundedDUL) -> list[str]:
    events = []
    while not dul.event_queue.empty():
        events.append(dul.event_queue.get())
    return events


def test_a_header_claiming_too_much_is_an_invalid_pdu_and_nothing_more_is_read(reader) -> None:
    dul, peer = reader
    peer.sendall(b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 100)
    dul._read_pdu_data()
    assert _events(dul) == ["Evt5", "Evt19"]  # connection indication, then invalid PDU
    dul._read_pdu_data()  # what follows is not read as PDUs: a closed connection
    assert _events(dul) == ["Evt17"]


def test_a_request_trickled_in_is_cut_off_at_the_request_deadline(reader) -> None:
    """Even when the bytes arrive before the DUL thread runs (no ARTIM timer started yet)."""
    dul, peer = reader
    dul.request_deadline = time.monotonic() + 0.3
    stop = threading.Event()

    def trickle() -> None:
        peer.sendall(b"\x01\x00\x00\x00\x00\x90")  # an A-ASSOCIATE-RQ header, 144 bytes
        while not stop.wait(0.05):
            peer.sendall(b"\x00")

    threading.Thread(target=trickle, daemon=True).start()
    start = time.monotonic()
    try:
        dul._read_pdu_data()
    finally:
        stop.set()
    assert _events(dul) == ["Evt5", "Evt17"]
    assert time.monotonic() - start < 2
