"""Associations the node opens as a client (SCU): addressing, TCP_NODELAY, C-ECHO.

pynetdicom leaves Nagle's algorithm on for the sockets it connects; every small DIMSE
message then waits for a delayed ACK (about 40 ms on loopback). `nodelay_handlers()` turns
it off as soon as the connection is open; pass it as evt_handlers to every AE.associate().
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from node.config import ConfigError, Settings, check_ae_title, check_port

# AE@HOST:PORT; HOST may be a bracketed IPv6 address.
ADDRESS_PATTERN = re.compile(r"(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@\[\]]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class RemoteNode:
    """A DICOM node to connect to: a configured destination or peer, or an explicit address."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False  # associate over TLS (node.tls.client_context)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class EchoResult:
    remote: RemoteNode
    ok: bool
    status: int | None  # DIMSE status of the C-ECHO response; None when there was none
    message: str
    seconds: float


def resolve_remote(target: str, settings: Settings) -> RemoteNode:
    """A [[destinations]] or [[peers]] name (destinations first), or AE@HOST:PORT."""
    for entry in (*settings.destinations, *settings.peers):
        if entry.name == target:
            return RemoteNode(entry.name, entry.ae_title, entry.host, entry.port, entry.tls)
    match = ADDRESS_PATTERN.fullmatch(target)
    if match is None:
        names = sorted({e.name for e in (*settings.destinations, *settings.peers)})
        raise ConfigError(
            f"{target!r} is neither a configured destination or peer ({', '.join(names) or 'none'})"
            " nor AE@HOST:PORT"
        )
    ae_title, host, port = match["ae"], match["host"].strip("[]"), int(match["port"])
    check_ae_title(ae_title, "AE title")
    check_port(port, "port")
    return RemoteNode(target, ae_title, host, port)


def _set_tcp_nodelay(event: evt.Event) -> None:
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def nodelay_handlers() -> list[tuple[evt.EventType, object]]:
    """evt_handlers for AE.associate() that switch off Nagle's algorithm on the socket."""
    return [(evt.EVT_CONN_OPEN, _set_tcp_nodelay)]


def tls_args(remote: RemoteNode, context: ssl.SSLContext | None) -> tuple | None:
    """AE.associate()'s tls_args for a remote that wants TLS: the context and the host name
    its certificate must carry."""
    if not remote.tls:
        return None
    if context is None:
        raise ConfigError(f"{remote.name}: tls = true, but no TLS client context was given")
    return (context, remote.host)


def echo(
    remote: RemoteNode,
    calling_ae: str,
    timeout_s: float = 10.0,
    tls_context: ssl.SSLContext | None = None,
) -> EchoResult:
    """One association with a C-ECHO (Verification) to the remote node (over TLS when the
    remote says so, with `tls_context`)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    start = time.perf_counter()
    association = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        evt_handlers=nodelay_handlers(),
        tls_args=tls_args(remote, tls_context),
    )
    if not association.is_established:
        if association.is_rejected and association.acceptor.primitive is not None:
            primitive = association.acceptor.primitive
            why = (
                f"association rejected (result 0x{primitive.result:02X}, source "
                f"0x{primitive.result_source:02X}, reason 0x{primitive.diagnostic:02X}: "
                f"{primitive.reason_str})"
            )
        elif association.is_aborted:
            why = "association aborted by the remote node"
        else:
            why = "no association (connection refused or timed out)"
        return EchoResult(remote, False, None, why, time.perf_counter() - start)
    try:
        response = association.send_c_echo()
    finally:
        association.release()
    seconds = time.perf_counter() - start
    status = getattr(response, "Status", None)
    if status is None:
        return EchoResult(remote, False, None, "no C-ECHO response (timeout or abort)", seconds)
    ok = status == 0x0000
    return EchoResult(remote, ok, int(status), "success" if ok else "failure status", seconds)
