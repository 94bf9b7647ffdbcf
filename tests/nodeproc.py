"""A real `ctnode serve` in a subprocess for integration tests and benchmarks: its own folder
(site config, SQLite database, spool, outbox, log), a free port, and helpers to query it and
run the CLI against it."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.tools import REPO

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Nagle off, see DESIGN.md conventions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def site_config(sections: dict[str, dict], lists: dict[str, list[dict]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    for section, entries in lists.items():
        for entry in entries:
            lines.append(f"[[{section}]]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in entry.items())
    return "\n".join(lines) + "\n"


@dataclass
class NodeProcess:
    folder: Path
    port: int
    sections: dict[str, dict] = field(default_factory=dict)
    lists: dict[str, list[dict]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)  # runs the node, e.g. ["strace", ...]
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.folder / "site.toml"

    @property
    def database(self) -> Path:
        return self.folder / "ctnode.db"

    @property
    def log(self) -> Path:
        return self.folder / "serve.log"

    def start(self, timeout_s: float = 90) -> NodeProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        sections = {
            "node": {"port": self.port},
            "storage": {
                "spool_dir": str(self.folder / "spool"),
                "database_url": f"sqlite:///{self.database}",
                "min_free_mb": 0,
            },
            "results": {"outbox_dir": str(self.folder / "outbox")},
        }
        for section, values in self.sections.items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text(site_config(sections, self.lists))
        with self.log.open("w") as stream:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "node.cli", "serve"]
                + ["--config", str(self.config)],
                cwd=REPO,
                stdout=stream,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout_s
        while "ctnode started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ctnode serve did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.database, timeout=30) as connection:
            return connection.execute(sql, args).fetchall()

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "node.cli", *args, "--config", str(self.config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **self.env, "COLUMNS": "200"},
        )

    def cli_json(self, *args: str) -> object:
        run = self.cli(*args, "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)

    def log_text(self) -> str:
        return self.log.read_text()


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.2):
    """Poll until predicate() is truthy; its value. Raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)
