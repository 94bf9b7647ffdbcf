"""`ctnode purge`: retention on demand (node.retention), the same pass the running node makes
every [retention] check_interval_s."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.cli.common import ConfigOption, console, database, fail, plain, settings_or_exit


def purge(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only list what would be deleted")
    ] = False,
    older_than_days: Annotated[
        float | None,
        typer.Option(
            "--older-than-days",
            min=0,
            help="purge what was last active this many days ago (default: [retention] keep_days)",
        ),
    ] = None,
) -> None:
    """Delete delivered series (spool files, outbox results, rows) older than the retention
    period, as the running node does every [retention] check_interval_s (docs/operations.md)."""
    from node.retention import purge as purge_series

    settings = settings_or_exit(config)
    days = settings.retention.keep_days if older_than_days is None else older_than_days
    if older_than_days is None and days == 0:
        console.print(escape("retention is off ([retention] keep_days = 0): nothing is purged"))
        return
    with database(settings) as sessions:
        report = purge_series(settings, sessions, keep_days=days, dry_run=dry_run)
    if report.locked_out:
        raise fail("another purge is running; nothing done")
    table = Table(title=f"Series last active before {report.cutoff:%Y-%m-%d %H:%M} UTC")
    for name in ("series UID", "state", "last active (UTC)", "instances", "MB", "jobs"):
        table.add_column(name, overflow="fold")
    for candidate in report.candidates:
        table.add_row(
            plain(candidate.series_uid),
            plain(candidate.state),
            f"{candidate.last_activity:%Y-%m-%d %H:%M}",
            str(candidate.instances),
            f"{candidate.instance_bytes / 1e6:.1f}",
            str(candidate.jobs),
        )
    if report.candidates:
        console.print(table)
    total_mb = sum(c.instance_bytes for c in report.candidates) / 1e6
    if dry_run:
        console.print(f"would purge {len(report.candidates)} series ({total_mb:.1f} MB of images)")
        return
    if report.interrupted_finished:
        console.print(f"finished {report.interrupted_finished} purge(s) a crash had interrupted")
    console.print(f"purged {len(report.purged)} series, {report.files_deleted} spool files deleted")
