"""pynetdicom's association socket, tuned for receiving many large instances on one association.

pynetdicom 3.0's DUL thread polls: it asks select() whether data is waiting without waiting
for it and, when none is, sleeps 1 ms before it asks again; it then reads a PDU 4 kB at a time
into a growing bytearray. Each CT slice therefore waits on average about half a millisecond
before anyone notices it has arrived, and a 1 MB PDU takes 256 reads. `ReceiveSocket` waits in
select() itself (up to `WAIT_S`, so an idle association wakes no more often than pynetdicom's
own 1 ms loop) and reads each PDU straight into a buffer of its final size. Measured with
storescu, 300 slices of 512 x 512 over one association on the 2-core development machine,
median of 6 alternating rounds: `ctnode serve` 2.79 s -> 2.48 s (docs/benchmarks.md).

`receive_socket_handlers()` gives the listener an EVT_CONN_OPEN handler that switches each
accepted connection's socket to this class. It leaves alone any socket that is not exactly
pynetdicom's plain AssociationSocket (a TLS socket, or a newer pynetdicom's own), which then
keeps working as pynetdicom made it, only without the tuning; a test checks that the node's
sockets are switched.
"""

from __future__ import annotations

import select
import ssl
import time

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket

# Longest wait for data in one call of `ready`; pynetdicom's DUL loop sleeps as long between polls.
WAIT_S = 0.001


class ReceiveSocket(AssociationSocket):
    """AssociationSocket that waits for data in select() and reads PDUs in one buffer."""

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

    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly nr_bytes (fewer only when the peer closes the connection)."""
        buffer = bytearray(nr_bytes)
        received = 0
        with memoryview(buffer) as view:
            while received < nr_bytes:
                count = self.socket.recv_into(view[received:], nr_bytes - received)
                if not count:
                    break  # connection closed: pynetdicom reports the short read itself
                received += count
        del buffer[received:]
        return buffer


def _switch_to_receive_socket(event: evt.Event) -> None:
    dul = event.assoc.dul
    sock = dul.socket
    if type(sock) is not AssociationSocket or isinstance(sock.socket, ssl.SSLSocket):
        return
    sock.__class__ = ReceiveSocket
    dul._run_loop_delay = 0  # ReceiveSocket.ready does the waiting


def receive_socket_handlers() -> list[tuple[evt.EventType, object]]:
    """evt_handlers for AE.start_server() that switch accepted connections to ReceiveSocket."""
    return [(evt.EVT_CONN_OPEN, _switch_to_receive_socket)]
