"""What every command of `ctnode` shares: the console, the --config and --json options,
loading the settings, the database session factory, and the small formatters of the tables.

Everything printed through rich is markup to rich: a value that came from outside (an AE
title, a job log message, a configuration error naming `[section]`) goes through `escape` or
into a `Text`, so a "[/]" in it prints as it is instead of raising MarkupError or vanishing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from sqlalchemy.orm import sessionmaker

from node.config import ConfigError, Settings, load_settings

console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="site configuration (TOML) on top of config.toml"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def new_typer(**kwargs) -> typer.Typer:
    """A Typer app whose help texts are plain text: `[organs] model` in a help string shows as
    written (rich markup mode would take "[organs]" for a style and drop it)."""
    return typer.Typer(rich_markup_mode=None, **kwargs)


def fail(message: str, detail: object = "", code: int = 1) -> typer.Exit:
    """Print "message: detail" in red (detail escaped) and return the Exit to raise."""
    text = f"[red]{escape(message)}[/red]"
    if detail != "":
        text += f" {escape(str(detail))}"
    console.print(text)
    return typer.Exit(code)


def settings_or_exit(config: Path | None) -> Settings:
    """The settings of config.toml, the --config file and the environment; exit 2 with the
    reason when they are wrong."""
    try:
        return load_settings(config)
    except ConfigError as error:
        raise fail("configuration error:", error, code=2) from error


@contextmanager
def database(settings: Settings) -> Iterator[sessionmaker]:
    """The node's database (migrated to the newest schema), as a session factory."""
    from node.db import init_db, make_session_factory

    engine = init_db(settings.storage.database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def abbreviated_uid(uid: str, keep: int = 10) -> str:
    """The end of a UID, where UIDs of one site differ (the start is the site's root)."""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def when(iso: str | None, with_date: bool = False) -> str:
    if not iso:
        return ""
    return iso[:19].replace("T", " ") if with_date else iso[11:19]


def seconds_text(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


STATE_COLOURS = {
    "done": "green",
    "sent": "green",
    "failed": "red",
    "superseded": "dim",
    "running": "cyan",
    "sending": "cyan",
    "queued": "yellow",
    "pending": "yellow",
    "ignored": "dim",
}


def state_text(value: str | None) -> Text:
    """A job, series or delivery state in its colour."""
    return Text(value or "", style=STATE_COLOURS.get(value or "", ""))


def plain(value: object) -> Text:
    """A table cell shown exactly as it is (no markup)."""
    return Text("" if value is None else str(value))
