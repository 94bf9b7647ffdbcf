"""A size cap on what one DIMSE message may make the listener hold in memory.

pynetdicom 3.0 collects a message's data set fragments, P-DATA-TF by P-DATA-TF, in one BytesIO
until the last fragment, and only then hands the request to the C-STORE handler, so an instance
of any size is first held whole in memory (a 512 MiB instance cost the node 1 GB). Its
alternative, `_config.STORE_RECV_CHUNKED_DATASET`, writes every data set to a temporary file
outside the spool instead, for every instance, and still accepts any size.

`CappedDIMSE` counts the data set bytes as they arrive. Once a message's data set passes the
cap, the bytes received so far are dropped and the rest is only counted (`OversizeDataSet`);
the request still reaches the handler when its last fragment arrives, which answers it with a
failure status (node/receive.py), and the association goes on. A command set is a few hundred
bytes; one beyond `COMMAND_SET_LIMIT_BYTES` is a protocol error that aborts the association.
"""

from __future__ import annotations

import logging
from io import BytesIO

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

LOG = logging.getLogger("ctnode.receive")

COMMAND_SET_LIMIT_BYTES = 64 * 1024


class OversizeDataSet(BytesIO):
    """Stands in for a data set that passed the cap: holds nothing, counts what arrived."""

    def __init__(self, received_bytes: int) -> None:
        super().__init__()
        self.received_bytes = received_bytes

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like, as BytesIO.write
        size = memoryview(data).nbytes
        self.received_bytes += size
        return size


class CappedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with a cap on one message's data set (`max_data_set_bytes`)."""

    max_data_set_bytes: int = 0  # set when an association is switched to this class

    def receive_primitive(self, primitive: P_DATA) -> None:
        message = self.message
        if message is not None:
            incoming_command, incoming_data = _fragment_sizes(primitive)
            command_size = message.encoded_command_set.tell() + incoming_command
            if command_size > COMMAND_SET_LIMIT_BYTES:
                self._abort(f"DIMSE command set of more than {COMMAND_SET_LIMIT_BYTES} bytes")
                return
            data_set = message.data_set
            if not isinstance(data_set, OversizeDataSet) and isinstance(data_set, BytesIO):
                size = data_set.tell() + incoming_data
                if size > self.max_data_set_bytes:
                    # The rest of this data set is only counted; the handler refuses it.
                    message.data_set = OversizeDataSet(data_set.tell())
        try:
            super().receive_primitive(primitive)
        except Exception as error:  # noqa: BLE001 - whatever the bytes made pydicom raise
            # Raised here it would kill pynetdicom's DUL thread (it runs this in a state
            # machine action); an undecodable message aborts the association instead.
            self._abort(f"undecodable DIMSE message ({type(error).__name__})")

    def _abort(self, reason: str) -> None:
        LOG.warning("%s from %s: aborting", reason, self.assoc.requestor.address)
        self.message = None
        self.dul.event_queue.put("Evt19")  # invalid PDU: the state machine aborts


def _fragment_sizes(primitive: P_DATA) -> tuple[int, int]:
    """(command set bytes, data set bytes) in a P-DATA primitive's PDVs (PS3.8 E.2)."""
    command = data = 0
    for _, fragment in primitive.presentation_data_value_list:
        if not fragment:
            continue
        if fragment[0] & 1:
            command += len(fragment) - 1
        else:
            data += len(fragment) - 1
    return command, data


def _switch_to_capped_dimse(event: evt.Event, max_data_set_bytes: int) -> None:
    dimse = event.assoc.dimse
    if type(dimse) is not DIMSEServiceProvider:
        return  # a newer pynetdicom's own: left as it is (a test checks the switch)
    dimse.__class__ = CappedDIMSE
    dimse.max_data_set_bytes = max_data_set_bytes


def capped_dimse_handlers(max_data_set_bytes: int) -> list[tuple]:
    """evt_handlers for AE.start_server() that cap each message's data set in memory."""
    return [(evt.EVT_CONN_OPEN, _switch_to_capped_dimse, [max_data_set_bytes])]
