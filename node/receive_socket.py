"""How the listener reads from an accepted connection: bounded, timed out, and quick.

pynetdicom 3.0 reads a PDU as a 6-byte header and then as many bytes as the header announces,
from a blocking socket without a timeout. Anyone who can reach the port could therefore make
the node allocate whatever a header claims (up to 4 GiB) before any AE title is checked, and
hold a connection open forever by stopping in the middle of a PDU (the DUL thread then waits
in recv() and never looks at its timers). This module closes both holes and keeps the receive
speed tuning:

* `BoundedDUL` reads each PDU itself: an unknown PDU type, or a length beyond what that type
  can be (`pdu_length_limit`), is a protocol error answered with an A-ABORT, after which
  nothing more is read from that peer; the buffer is never larger than the limit.
* `ReceiveSocket` gives every read a deadline: at most `network_timeout_s` of silence, and
  until the A-ASSOCIATE-RQ is complete, no later than the ACSE timeout (`network_timeout_s`,
  which pynetdicom also gives its ARTIM timer, PS3.8 9.1.5) after the connection was accepted,
  so even a peer that trickles one byte at a time is closed. A timed-out read is a closed
  transport connection (Evt17) to the state machine.
* A connection that closes before it sent an A-ASSOCIATE-RQ (a health check's connect and
  close) ends its acceptor thread at once instead of after the ACSE timeout.

The receive speed tuning: pynetdicom's DUL thread polls (select() without waiting, then a 1 ms
sleep) and reads a PDU 4 kB at a time into a growing bytearray. `ReceiveSocket` waits in
select() itself (up to `WAIT_S`, so an idle association wakes no more often than pynetdicom's
own 1 ms loop) and reads each PDU straight into a buffer of its final size. Measured with
storescu, 300 slices of 512 x 512 over one association on the 2-core development machine,
median of 6 alternating rounds: `ctnode serve` 2.79 s -> 2.48 s (docs/benchmarks.md).

`receive_socket_handlers()` gives the listener an EVT_CONN_OPEN handler that switches each
accepted connection to these classes. It leaves alone any socket that is not exactly
pynetdicom's plain AssociationSocket (a TLS socket, or a newer pynetdicom's own), which then
keeps working as pynetdicom made it, without the tuning and the bounds; a test checks that the
node's connections are switched.
"""

from __future__ import annotations

import logging
import queue
import select
import ssl
import struct
import time

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

LOG = logging.getLogger("ctnode.receive")

# Longest wait for data in one call of `ready`; pynetdicom's DUL loop sleeps as long between polls.
WAIT_S = 0.001

PDU_HEADER_BYTES = 6  # type, reserved, 4-byte length (PS3.8 9.3.1)

# Room above the announced maximum PDU length for a P-DATA-TF: senders disagree on whether
# the limit counts the PDV item headers (PS3.8 D.1 says it is the PDU's variable field).
P_DATA_SLACK_BYTES = 64 * 1024
# Used when no maximum was announced (0, "unlimited" in pynetdicom): the node itself announces
# 1 MiB (node/receive.py), this only guards a configuration without one.
P_DATA_FALLBACK_LIMIT_BYTES = 4 * 1024 * 1024
# An A-ASSOCIATE-RQ (or -AC) holds at most 128 presentation contexts. 128 contexts proposing
# 20 transfer syntaxes of 64 characters each are about 180 kB; DCMTK's storescu proposing every
# storage SOP class sends about 15 kB. 256 KiB leaves room for extended negotiation and a user
# identity token without letting an unauthenticated peer claim more.
ASSOCIATE_LIMIT_BYTES = 256 * 1024
# A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT have a fixed 4-byte variable field
# (PS3.8 9.3.4, 9.3.6-9.3.8).
FIXED_LENGTH_BYTES = 4


def pdu_length_limit(pdu_type: int, maximum_pdu_length: int) -> int | None:
    """The most bytes after the header a PDU of this type may announce; None: unknown type.

    `maximum_pdu_length` is the Maximum Length the node announced in its A-ASSOCIATE-AC (the
    largest P-DATA-TF it agreed to receive; 0 means none was set).
    """
    if pdu_type in (0x01, 0x02):  # A-ASSOCIATE-RQ, -AC
        return ASSOCIATE_LIMIT_BYTES
    if pdu_type == 0x04:  # P-DATA-TF
        return (maximum_pdu_length or P_DATA_FALLBACK_LIMIT_BYTES) + P_DATA_SLACK_BYTES
    if pdu_type in (0x03, 0x05, 0x06, 0x07):  # A-ASSOCIATE-RJ, A-RELEASE-RQ/RP, A-ABORT
        return FIXED_LENGTH_BYTES
    return None


class ReceiveSocket(AssociationSocket):
    """AssociationSocket that waits for data in select(), reads PDUs in one buffer, and gives
    every read a deadline."""

    # Longest silence within one read; set from network_timeout_s when the socket is switched.
    silence_timeout_s: float | None = None

    @property
    def ready(self) -> bool:
        """True once data is waiting to be read, after at most WAIT_S.

        The DUL loop calls this whenever it has nothing queued to send; waiting here rather
        than in the loop's sleep means the first byte of a PDU is read as soon as it arrives.
        """
        if self.socket is None or self._is_connected is False:
            time.sleep(WAIT_S)  # the DUL's own sleep is set to 0: never spin on a closed socket
            return False
        try:
            readable, _, _ = select.select([self.socket], [], [], WAIT_S)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom does
            return False
        return bool(readable)

    def recv(self, nr_bytes: int, deadline: float | None = None) -> bytearray:
        """Read exactly nr_bytes (fewer only when the peer closes the connection).

        Raises TimeoutError when no byte arrives for `silence_timeout_s`, or when the
        time.monotonic() `deadline` passes first.
        """
        buffer = bytearray(nr_bytes)
        received = 0
        with memoryview(buffer) as view:
            while received < nr_bytes:
                wait = self._wait_s(deadline)
                if wait != self.socket.gettimeout():  # settimeout costs a system call
                    self.socket.settimeout(wait)
                count = self.socket.recv_into(view[received:], nr_bytes - received)
                if not count:
                    break  # connection closed: the caller reports the short read
                received += count
        del buffer[received:]
        return buffer

    def _wait_s(self, deadline: float | None) -> float | None:
        wait = self.silence_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the deadline passed")
            wait = left if wait is None else min(wait, left)
        return wait


class BoundedDUL(DULServiceProvider):
    """pynetdicom's DUL with a PDU reader that bounds what a peer can make it allocate or hold.

    Replaces DULServiceProvider._read_pdu_data (pynetdicom 3.0), keeping its events: Evt17
    for a closed (here also: silent) connection, Evt19 for an invalid PDU, the decoded PDU's
    own event otherwise.
    """

    # Set once a peer broke the PDU framing: what follows cannot be trusted to be PDUs.
    framing_lost = False
    # Set when an A-ASSOCIATE-RQ PDU was received (the connection is an association attempt).
    association_requested = False
    # time.monotonic() by which the A-ASSOCIATE-RQ must have arrived; None: no limit.
    request_deadline: float | None = None

    def _read_pdu_data(self) -> None:
        sock: ReceiveSocket = self.socket  # type: ignore[assignment]
        if self.framing_lost:
            self.event_queue.put("Evt17")  # treat the rest as a closed connection
            return
        deadline = None if self.association_requested else self.request_deadline
        try:
            header = sock.recv(PDU_HEADER_BYTES, deadline)
            if len(header) < PDU_HEADER_BYTES:
                self.event_queue.put("Evt17")  # closed: nothing, or part of a header, came
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            limit = pdu_length_limit(pdu_type, self.assoc.acceptor.maximum_length)
            if limit is None or length > limit:
                self._protocol_error(pdu_type, length, limit)
                return
            body = sock.recv(length, deadline)
        except TimeoutError:
            LOG.warning(
                "connection from %s silent for %s s inside a PDU (or no A-ASSOCIATE-RQ in "
                "time): closing it",
                self._peer(),
                sock.silence_timeout_s,
            )
            self.event_queue.put("Evt17")
            return
        except OSError:
            self.event_queue.put("Evt17")
            return
        if len(body) < length:
            self.event_queue.put("Evt17")  # the peer closed in the middle of the PDU
            return
        try:
            pdu, event = self._decode_pdu(header + body)
            # The state machine's actions convert the PDU again and do not expect this to fail
            # (an A-ABORT with an unknown source value kills pynetdicom's DUL thread there).
            pdu.to_primitive()
        except Exception as error:  # noqa: BLE001 - whatever the bytes made the decoder raise
            # Only the type: the message could quote the bytes.
            LOG.warning(
                "undecodable PDU type 0x%02X (%d bytes) from %s: aborting (%s)",
                pdu_type,
                length,
                self._peer(),
                type(error).__name__,
            )
            self.framing_lost = True
            self.event_queue.put("Evt19")
            return
        if pdu_type == 0x01:
            self.association_requested = True
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _process_recv_primitive(self) -> bool:
        """Pass on what the association thread sends, except while awaiting the close (Sta13).

        After an A-ABORT or A-RELEASE-RP the connection only waits to be closed, and PS3.8's
        state table has no action for a local request (a C-ECHO response still on its way,
        say): pynetdicom 3.0 raises InvalidEventError there and its DUL thread dies, leaving
        the association without its closing events. Such late requests are dropped.
        """
        if self.state_machine.current_state == "Sta13":
            while True:
                try:
                    self.to_provider_queue.get_nowait()
                except queue.Empty:
                    return False
        return super()._process_recv_primitive()

    def _protocol_error(self, pdu_type: int, length: int, limit: int | None) -> None:
        if limit is None:
            what = f"unknown PDU type 0x{pdu_type:02X}"
        else:
            what = f"PDU type 0x{pdu_type:02X} announcing {length} bytes (at most {limit})"
        LOG.warning("%s from %s: aborting the connection", what, self._peer())
        self.framing_lost = True
        self.event_queue.put("Evt19")  # invalid PDU: the state machine sends an A-ABORT

    def _peer(self) -> str:
        info = self.assoc.requestor.address_info
        return f"{info.address}:{info.port}" if info is not None else "?"


def _switch_to_bounded_reading(event: evt.Event) -> None:
    association = event.assoc
    dul = association.dul
    sock = dul.socket
    if type(sock) is not AssociationSocket or isinstance(sock.socket, ssl.SSLSocket):
        return
    if type(dul) is not DULServiceProvider:
        return
    sock.__class__ = ReceiveSocket
    sock.silence_timeout_s = association.network_timeout
    dul.__class__ = BoundedDUL
    # Counted from here, the acceptance, not from the DUL thread's start: data can arrive
    # before that thread runs (and before pynetdicom starts its ARTIM timer).
    if association.acse_timeout is not None:
        dul.request_deadline = time.monotonic() + association.acse_timeout
    dul._run_loop_delay = 0  # ReceiveSocket.ready does the waiting


def _end_unrequested_connection(event: evt.Event) -> None:
    """A connection closed before any A-ASSOCIATE-RQ: wake the acceptor thread, which waits
    for the request up to the ACSE timeout, as its timeout would (it then ends the thread)."""
    association = event.assoc
    dul = association.dul
    if association.is_acceptor and isinstance(dul, BoundedDUL) and not dul.association_requested:
        dul.to_user_queue.put(None)


def receive_socket_handlers() -> list[tuple[evt.EventType, object]]:
    """evt_handlers for AE.start_server(): bounded, timed-out reading of accepted connections."""
    return [
        (evt.EVT_CONN_OPEN, _switch_to_bounded_reading),
        (evt.EVT_CONN_CLOSE, _end_unrequested_connection),
    ]
