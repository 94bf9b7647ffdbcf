"""DICOM over TLS: the SSL contexts of the TLS listener and of TLS associations to destinations.

Both follow the BCP 195 secure transport profiles of PS3.15 Annex B (B.9 "BCP 195", B.10
"Non-downgrading BCP 195"): TLS 1.2 or newer only, and for TLS 1.2 only the AEAD cipher suites
with forward secrecy that RFC 7525 recommends (ECDHE/DHE with AES-GCM). TLS 1.3 suites are all
AEAD with forward secrecy; Python's ssl offers no way to narrow them, nor a need to.

The listener's handshake is deferred to the association's own thread. pynetdicom wraps each
accepted socket in `AssociationServer.get_request`, inside the one thread that accepts every
connection, and with the default `do_handshake_on_connect` the handshake runs right there:
a client that connects and sends nothing (a plain TCP health check, a port scan, a stalled
peer) would block every later TLS connection. `ListenerContext` wraps without the handshake,
and `handshake_handlers()` runs it, bounded by [node] network_timeout_s, when pynetdicom opens
the association (EVT_CONN_OPEN, in the association's thread). A failed handshake (a plain
DICOM client on the TLS port, no or an untrusted client certificate) closes that connection
only, with a log line.
"""

from __future__ import annotations

import logging
import socket
import ssl

from pynetdicom import evt

from node.config import TlsSettings

LOG = logging.getLogger("ctnode.tls")

# RFC 7525 section 4.2 (BCP 195), the suites of the PS3.15 B.9/B.10 profiles, in OpenSSL names.
BCP195_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


class ListenerContext(ssl.SSLContext):
    """An SSLContext whose server-side wrap leaves the handshake for later (module docstring)."""

    def wrap_socket(self, sock: socket.socket, *args: object, **kwargs: object) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)  # type: ignore[arg-type]


def _restrict(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION  # CRIME; OpenSSL 3 has it off already


def listener_context(tls: TlsSettings) -> ListenerContext:
    """The TLS listener's context: the node's certificate and key, client certificates
    checked against [tls] ca (required with require_client_cert)."""
    context = ListenerContext(ssl.PROTOCOL_TLS_SERVER)
    _restrict(context)
    context.load_cert_chain(tls.certificate, tls.key)
    if tls.ca:
        context.load_verify_locations(cafile=tls.ca)
    if tls.require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca:
        context.verify_mode = ssl.CERT_OPTIONAL  # a certificate that is presented must verify
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context of associations to TLS destinations: their certificate must verify
    against [tls] ca (the system's CAs when empty) and name the host; the node presents its
    own certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca or None)
    _restrict(context)
    if tls.certificate and tls.key:
        context.load_cert_chain(tls.certificate, tls.key)
    return context


def is_tls(sock: object) -> bool:
    return isinstance(sock, ssl.SSLSocket)


def handshake_handlers(timeout_s: float) -> list[tuple[evt.EventType, object]]:
    """evt_handlers for the TLS listener that run each connection's deferred handshake.

    Bind them before any other EVT_CONN_OPEN handler, so those see an established TLS socket.
    """

    def handshake(event: evt.Event) -> None:
        wrapper = event.assoc.dul.socket
        sock = wrapper.socket if wrapper is not None else None
        if not is_tls(sock):
            return
        address = event.address[0] if event.address else "?"
        sock.settimeout(timeout_s)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as error:
            # The reason names no patient data: an OpenSSL reason or a timeout.
            reason = getattr(error, "reason", None) or type(error).__name__
            LOG.warning("TLS handshake with %s failed (%s); connection closed", address, reason)
            # Closing the socket ends the association before it starts: pynetdicom's state
            # machine sees a closed transport connection at its first read.
            wrapper.close()
            return
        sock.settimeout(None)  # pynetdicom reads blocking sockets; its own timers apply
        LOG.debug("TLS %s with %s (%s)", sock.version(), address, sock.cipher()[0])

    return [(evt.EVT_CONN_OPEN, handshake)]
