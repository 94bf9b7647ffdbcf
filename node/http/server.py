"""The node's HTTP port ([http]): /metrics, /healthz and the read-only status page.

Served by the standard library (http.server.ThreadingHTTPServer): a handful of read-only GET
routes need no framework, and a framework would be one more dependency for a hospital to
patch. One thread per request; every request opens its own short database session.

Access: bound to loopback by default. With [http] token set (required by the configuration
for any other bind address) every request must carry it, either as
`Authorization: Bearer <token>` (Prometheus' `authorization` setting, curl, probes) or, for a
browser, once as `?token=<token>`: the answer then sets an HttpOnly, SameSite=Strict cookie
and redirects to the same address without the token, so it does not stay in the address bar,
the history or the links. Tokens are compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.http.health import Health
from node.http.metrics import NodeCollector, make_registry
from node.http.pages import index_page, job_page, overlay_png

LOG = logging.getLogger("ctnode.http")
COOKIE = "ctnode_token"
JOB_PAGE = re.compile(r"/jobs/(\d{1,18})")
OVERLAY = re.compile(r"/jobs/(\d{1,18})/overlay\.png")
HTML = "text/html; charset=utf-8"


class StatusServer:
    """The HTTP component of `ctnode serve` (start()/stop() like the other stages)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        listener_address: Callable[[], tuple[str, int] | None],
        model_loaded: Callable[[], bool] | None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.collector = NodeCollector(settings, sessions)
        self.registry = make_registry(self.collector)
        self.health = Health(settings, sessions, listener_address, model_loaded)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(bind address, port) the server is on (the real port when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the HTTP server is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        http = self.settings.http
        server_class = _server_class(http.bind)
        self._server = server_class((http.bind, http.port), _handler_class(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", kwargs={"poll_interval": 0.5}
        )
        self._thread.start()
        threading.Thread(target=self.collector.warm, name="metrics-warm", daemon=True).start()
        host, port = self.address
        LOG.info("status page, /metrics and /healthz on http://%s:%d/", host, port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
        LOG.info("HTTP server stopped")


def _server_class(bind: str) -> type[ThreadingHTTPServer]:
    import ipaddress
    import socket

    class Server(ThreadingHTTPServer):
        daemon_threads = True  # a slow client never holds up the node's shutdown
        address_family = (
            socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
        )

    return Server


def token_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _handler_class(node: StatusServer) -> type[BaseHTTPRequestHandler]:
    token = node.settings.http.token
    outbox = Path(node.settings.results.outbox_dir)

    class Handler(BaseHTTPRequestHandler):
        server_version = "ctnode"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if token and not self._authorised(url.path, query):
                return
            try:
                self._route(url.path)
            except SQLAlchemyError as error:
                LOG.error("HTTP %s: database unavailable (%s)", url.path, type(error).__name__)
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"database unavailable\n", "text/plain")
            except Exception as error:  # noqa: BLE001 - a page's fault never stops the server
                LOG.error("HTTP %s: %s", url.path, type(error).__name__, exc_info=True)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain")

        def _authorised(self, path: str, query: dict[str, list[str]]) -> bool:
            header = self.headers.get("Authorization", "")
            if header.startswith("Bearer ") and token_matches(header[7:].strip(), token):
                return True
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if COOKIE in cookie and token_matches(cookie[COOKIE].value, token):
                return True
            if "token" in query and token_matches(query["token"][0], token):
                rest = {k: v for k, v in query.items() if k != "token"}
                # One leading slash: "//host" would send the browser to another site.
                target = (
                    "/" + path.lstrip("/") + ("?" + urlencode(rest, doseq=True) if rest else "")
                )
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header(
                    "Set-Cookie", f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                )
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Bearer realm="ctnode"')
            body = b"a token is required: Authorization: Bearer <token>, or ?token= once\n"
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return False

        def _route(self, path: str) -> None:
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(node.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, report = node.health.report()
                status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
                body = (json.dumps(report, indent=1) + "\n").encode()
                self._send(status, body, "application/json")
            elif path == "/":
                with node.sessions() as session:
                    self._send(HTTPStatus.OK, index_page(session).encode(), HTML)
            elif match := JOB_PAGE.fullmatch(path):
                with node.sessions() as session:
                    html = job_page(session, int(match[1]))
                self._send_or_404(html.encode() if html else None, HTML)
            elif match := OVERLAY.fullmatch(path):
                with node.sessions() as session:
                    png = overlay_png(session, outbox, int(match[1]))
                self._send_or_404(png, "image/png")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _send_or_404(self, body: bytes | None, content_type: str) -> None:
            if body is None:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            else:
                self._send(HTTPStatus.OK, body, content_type)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")  # job states change; never stale
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # At DEBUG (a scrape every 15 s would flood the log at INFO), and only the path:
            # the request line would carry a ?token=.
            LOG.debug("%s %s %s", self.address_string(), self.command, urlsplit(self.path).path)

    return Handler
