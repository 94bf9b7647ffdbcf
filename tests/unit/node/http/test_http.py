"""The HTTP port's pieces without a node: [http] validation, the token on a real in-process
server, the job-log arithmetic behind the stage histogram, and the page's escaping."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.config import ConfigError, load_settings
from node.db import init_db, make_session_factory
from node.http.metrics import job_stage_durations
from node.http.pages import td
from node.http.server import COOKIE, StatusServer

TOKEN = "s3cret-token-0123456789"


def settings_with(tmp_path: Path, **http: str) -> object:
    env = {f"CTNODE_HTTP__{key.upper()}": value for key, value in http.items()}
    env |= {
        "CTNODE_STORAGE__DATABASE_URL": f"sqlite:///{tmp_path / 'ctnode.db'}",
        "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
        "CTNODE_STORAGE__MIN_FREE_MB": "0",
    }
    return load_settings(environ=env)


def test_http_is_off_and_on_loopback_by_default(tmp_path: Path) -> None:
    http_settings = settings_with(tmp_path).http
    assert http_settings.enabled is False and http_settings.bind == "127.0.0.1"
    assert http_settings.token == ""


def test_a_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a loopback address: set \\[http\\] token"):
        settings_with(tmp_path, enabled="true", bind="0.0.0.0")
    assert settings_with(tmp_path, enabled="true", bind="0.0.0.0", token=TOKEN).http.token
    with pytest.raises(ConfigError, match="at least 16 characters"):
        settings_with(tmp_path, token="short")
    with pytest.raises(ConfigError, match="an IP address"):
        settings_with(tmp_path, bind="everywhere")


@pytest.fixture
def server(tmp_path: Path):
    settings = settings_with(tmp_path, enabled="true", port="0", token=TOKEN)
    engine = init_db(settings.storage.database_url)
    running = StatusServer(settings, make_session_factory(engine), lambda: None, None)
    running.start()
    yield running
    running.stop()
    engine.dispose()


def get(server: StatusServer, path: str, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection(*server.address, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_every_request_needs_the_token(server: StatusServer) -> None:
    for path in ("/", "/metrics", "/healthz", "/jobs/1"):
        response, _ = get(server, path)
        assert response.status == 401, path
        assert response.getheader("WWW-Authenticate") == 'Bearer realm="ctnode"'
    response, _ = get(server, "/metrics", {"Authorization": "Bearer wrong-token-0123456789"})
    assert response.status == 401
    response, body = get(server, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200 and b"ctnode_database_up 1.0" in body


def test_a_browser_token_becomes_a_cookie_and_leaves_the_address(server: StatusServer) -> None:
    response, _ = get(server, f"/jobs/7?token={TOKEN}")
    assert response.status == 303 and response.getheader("Location") == "/jobs/7"
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie
    response, body = get(server, "/", {"Cookie": f"{COOKIE}={TOKEN}"})
    assert response.status == 200 and b"Recent jobs" in body
    assert b'<p id="jobs">none</p>' in body
    response, _ = get(server, "/jobs/7", {"Cookie": f"{COOKIE}={TOKEN}"})
    assert response.status == 404  # no such job
    response, _ = get(server, f"//elsewhere.example/?token={TOKEN}")
    assert response.getheader("Location") == "/elsewhere.example/"  # never to another site


def test_health_without_a_listener_is_503(server: StatusServer) -> None:
    import json

    response, body = get(server, "/healthz", {"Authorization": f"Bearer {TOKEN}"})
    report = json.loads(body)
    assert response.status == 503 and report["status"] == "unhealthy"
    assert report["checks"]["listener"]["ok"] is False
    assert report["checks"]["database"]["ok"] is True and report["checks"]["disk"]["ok"] is True
    assert "model" not in report["checks"]  # no worker in this process


def test_the_listener_check_connects_to_the_port() -> None:
    import socket

    from node.http.health import listener_check

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listener_check(("0.0.0.0", port)).detail == f"port {port} accepts connections"
        connection, _ = listener.accept()  # the check connected
        connection.close()
    closed = listener_check(("127.0.0.1", port))
    assert closed.ok is False and "does not accept connections" in closed.detail
    assert listener_check(None).ok is False


def at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_stage_durations_come_from_the_job_log() -> None:
    events = [
        ("job.queued", "queued", at(0)),
        ("job.running", "running", at(2)),
        ("job.stage.volume", None, at(3)),
        ("job.stage.score", None, at(7)),
        ("job.stage.results", None, at(8)),
        ("job.sending", "sending", at(8.5)),
        ("job.done", "done", at(9.5)),
    ]
    assert sorted(job_stage_durations(events)) == sorted(
        [
            ("volume", 1.0),
            ("score", 4.0),
            ("results", 1.0),
            ("queued", 2.0),
            ("running", 6.5),
            ("sending", 1.0),
        ]
    )
    assert list(job_stage_durations(events[:-1])) == []  # not finished: nothing yet


def test_a_retried_job_counts_only_its_new_attempt() -> None:
    events = [
        ("job.queued", "queued", at(0)),
        ("job.running", "running", at(1)),
        ("job.failed", "failed", at(2)),
        ("job.queued", "queued", at(100)),
        ("job.running", "running", at(110)),
        ("job.stage.volume", None, at(113)),
        ("job.done", "done", at(120)),
    ]
    assert sorted(job_stage_durations(events)) == [
        ("queued", 10.0),
        ("running", 10.0),
        ("volume", 3.0),
    ]


def test_page_values_are_escaped() -> None:
    assert td("<script>alert(1)</script>") == "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
