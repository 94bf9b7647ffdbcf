"""What the CLI prints is what it means: bracketed configuration names in help texts and
messages, and values from outside (an AE title "[/]"), are not taken for rich markup."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from typer.testing import CliRunner

from node.cli import app
from node.config import load_settings
from node.db import init_db, make_session_factory
from node.receive import Receiver
from tests.nodeproc import site_config

# "[organs] model", "[[destinations]]", "[demo] out_dir", "[calcium] heart_check"
BRACKETED = re.compile(r"\[\[[a-z_]+\]\]|\[[a-z_]+\](?: [a-z_]+)?")
MARKUP_AE = "[/]"


def commands(group, path: tuple[str, ...] = ()):
    """(command path, click command) for the app and every command and sub-command."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


def source_help(command) -> str:
    """The help texts as written in the source: the command's and its parameters'."""
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    return "\n".join(texts)


def test_every_help_shows_its_bracketed_configuration_names() -> None:
    runner = CliRunner()
    checked = []
    for path, command in commands(typer.main.get_command(app)):
        names = set(BRACKETED.findall(source_help(command)))
        if not names:
            continue
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.split())  # a name may wrap onto the next line
        for name in names:
            assert name in shown, f"ctnode {' '.join(path)} --help lost {name!r}:\n{shown}"
        checked.extend(f"{' '.join(path)}: {name}" for name in names)
    # the commands the bug report names are among those checked
    for expected in ("segment: [organs] model", "demo: [demo] out_dir", "echo: [[peers]]"):
        assert expected in checked, checked


def test_status_after_an_association_from_ae_markup_prints_it(tmp_path: Path) -> None:
    """The real receive path records the refused association; `ctnode status` shows it."""
    config = tmp_path / "site.toml"
    config.write_text(
        site_config(
            {
                "node": {"port": 0, "bind": "127.0.0.1"},
                "storage": {
                    "spool_dir": str(tmp_path / "spool"),
                    "database_url": f"sqlite:///{tmp_path / 'ctnode.db'}",
                    "min_free_mb": 0,
                },
            },
            {},
        )
    )
    settings = load_settings(config)
    engine = init_db(settings.storage.database_url)
    receiver = Receiver(settings, make_session_factory(engine))
    receiver.start()
    try:
        host, port = receiver.address
        caller = AE(ae_title=MARKUP_AE)
        caller.add_requested_context(Verification)
        association = caller.associate(host, port, ae_title=settings.node.ae_title)
        assert association.is_rejected  # not on the allow-list
        deadline = time.monotonic() + 10
        with engine.connect() as connection:
            while time.monotonic() < deadline:
                rows = connection.exec_driver_sql(
                    "SELECT message FROM events WHERE kind = 'association.rejected'"
                ).fetchall()
                if rows:
                    break
                time.sleep(0.1)
        assert rows and MARKUP_AE in rows[0][0]
    finally:
        receiver.stop()
        engine.dispose()

    result = CliRunner().invoke(app, ["status", "--config", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"association from '{MARKUP_AE}'" in result.output


def test_a_configuration_error_names_its_section(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("[node]\nbogus = 1\n")
    for command in (["status"], ["jobs"], ["models", "list"], ["demo"]):
        result = CliRunner().invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 2, (command, result.output)
        assert "configuration error: [node]: unknown keys ['bogus']" in result.output, command
