"""`ctnode series`, `ctnode jobs [show|retry]` and `ctnode status`: what the node received and
did, read from its database (node.admin turns the rows into dicts; this module prints them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import (
    ConfigOption,
    JsonOption,
    abbreviated_uid,
    console,
    database,
    fail,
    new_typer,
    plain,
    seconds_text,
    settings_or_exit,
    state_text,
    when,
)

jobs_app = new_typer(
    help="Jobs (one per series and pipeline): list, show one with its log, retry a failed one."
)


def series(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", help="most recent N series")] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="full UIDs in the table")] = False,
) -> None:
    """List received series, the most recently active first (UIDs abbreviated; --wide or
    --json for the full ones)."""
    import json

    from node.admin import series_rows

    settings = settings_or_exit(config)
    with database(settings) as sessions, sessions() as session:
        rows = series_rows(session, limit)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("no series received yet")
        return
    table = Table(title=f"Received series (most recent {len(rows)}, times in UTC)")
    columns = ["id", "series UID", *(["study UID"] if wide else []), "mod", "inst", "sender"]
    for name in (*columns, "first", "last", "state"):
        table.add_column(name, overflow="fold")
    for row in rows:
        uids = (
            [row["series_uid"], row["study_uid"]] if wide else [abbreviated_uid(row["series_uid"])]
        )
        table.add_row(
            str(row["id"]),
            *map(plain, uids),
            plain(row["modality"]),
            str(row["instances"]),
            plain(row["sender_ae"]),
            when(row["first_received_at"], with_date=True),
            when(row["last_received_at"]),
            state_text(row["state"]),
        )
    console.print(table)


@jobs_app.callback(invoke_without_command=True)
def jobs_list(
    context: typer.Context,
    config: ConfigOption = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="queued, running, sending, done, failed or superseded"),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="created since: 30m, 2h, 1d or an ISO time")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="most recent N jobs")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List jobs, the newest first (`ctnode jobs show ID` for one job's log)."""
    import json

    from node.admin import list_jobs, parse_since
    from node.db import JobState

    if context.invoked_subcommand is not None:
        return
    settings = settings_or_exit(config)
    if status is not None and status not in {s.value for s in JobState}:
        raise fail(f"--status: one of {', '.join(s.value for s in JobState)}", code=2)
    try:
        since_at = parse_since(since) if since else None
    except ValueError as error:
        raise fail(str(error), code=2) from error
    with database(settings) as sessions, sessions() as session:
        rows = list_jobs(session, status, since_at, limit)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("no jobs" + (f" in state {status}" if status else ""), markup=False)
        return
    table = Table(title=f"Jobs (newest {len(rows)}, times in UTC)")
    for name in ("id", "pipeline", "state", "series UID", "inst", "sender", "created", "took"):
        table.add_column(name, overflow="fold")
    table.add_column("error", overflow="fold", max_width=50)
    for row in rows:
        table.add_row(
            str(row["id"]),
            plain(row["pipeline"]),
            state_text(row["state"]),
            plain(abbreviated_uid(row["series_uid"])),
            str(row["instances"]),
            plain(row["sender_ae"]),
            when(row["created_at"], with_date=True),
            seconds_text(row["seconds"]),
            plain(row["error"]),
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="job id (see `ctnode jobs`)")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """One job: its series, the time spent in each stage, the job log, outputs, deliveries."""
    import json

    from node.admin import show_job

    settings = settings_or_exit(config)
    with database(settings) as sessions, sessions() as session:
        job = show_job(session, job_id)
    if job is None:
        raise fail(f"no job #{job_id}")
    if as_json:
        print(json.dumps(job, indent=1))
        return
    print_job(job)


def print_job(job: dict) -> None:
    """A job as `ctnode jobs show` prints it (the demo prints the same)."""
    series = job["series"]
    summary = Table(title=plain(f"Job #{job['id']} ({job['pipeline']})"), show_header=False)
    state = state_text(job["state"])
    if job["error"]:
        state.append(f": {job['error']}")
    summary.add_row("state", state)
    summary.add_row("series", plain(f"{series['series_uid']} ({series['modality'] or '?'})"))
    summary.add_row("study", plain(series["study_uid"]))
    summary.add_row(
        "received",
        plain(
            f"{series['instances']} instances from {series['sender_ae']}, "
            f"{when(series['first_received_at'], True)} - {when(series['last_received_at'])} UTC"
        ),
    )
    if job["superseded_by"]:
        summary.add_row("superseded by", f"job #{job['superseded_by']}")
    summary.add_row("attempts", str(job["attempts"]))
    console.print(summary)

    stages = Table(title="Time in each state")
    for name in ("state", "from (UTC)", "time"):
        stages.add_column(name)
    for stage in job["stages"]:
        time_text = seconds_text(stage["seconds"]) + (" (so far)" if stage["ongoing"] else "")
        stages.add_row(state_text(stage["state"]), when(stage["at"]), time_text)
    console.print(stages)

    log = Table(title="Job log")
    for name in ("time (UTC)", "event", "message"):
        log.add_column(name, overflow="fold")
    for event in job["events"]:
        log.add_row(when(event["at"]), plain(event["kind"]), plain(event["message"]))
    console.print(log)

    if job["outputs"]:
        outputs = Table(title="Outputs")
        for name in ("kind", "SOP instance UID", "bytes"):
            outputs.add_column(name, overflow="fold")
        for output in job["outputs"]:
            outputs.add_row(
                plain(output["kind"]), plain(output["sop_instance_uid"]), str(output["size_bytes"])
            )
        console.print(outputs)
    if job["deliveries"]:
        deliveries = Table(title="Deliveries")
        for name in ("id", "destination", "state", "tries", "sent / next try", "last error"):
            deliveries.add_column(name, overflow="fold")
        for d in job["deliveries"]:
            deliveries.add_row(
                str(d["id"]),
                plain(d["destination"]),
                state_text(d["state"]),
                str(d["attempts"]),
                when(d["sent_at"] or d["next_attempt_at"]),
                plain(d["last_error"]),
            )
        console.print(deliveries)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int, typer.Argument(help="id of a failed job")],
    config: ConfigOption = None,
) -> None:
    """Retry a failed job: its failed deliveries are sent again, or (without results) the job
    runs again. A running `ctnode serve` picks it up."""
    from node.jobs import JobNotFoundError
    from node.jobs import retry as retry_job

    settings = settings_or_exit(config)
    with database(settings) as sessions:
        try:
            message = retry_job(sessions, job_id)
        except (JobNotFoundError, ValueError) as error:
            raise fail(str(error)) from error
    console.print(message, markup=False)


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    hours: Annotated[float, typer.Option("--hours", help="window of recent failures")] = 24.0,
) -> None:
    """Queue depths (series, jobs, deliveries by state) and recent failures."""
    import json

    from node.admin import status as node_status

    settings = settings_or_exit(config)
    with database(settings) as sessions, sessions() as session:
        report = node_status(session, timedelta(hours=hours))
    if as_json:
        print(json.dumps(report, indent=1))
        return
    depths = Table(title="Queues")
    depths.add_column("what")
    depths.add_column("by state")
    for what in ("series", "jobs", "deliveries"):
        by_state = [state_text(k).append(f" {v}", style="") for k, v in report[what].items() if v]
        depths.add_row(what, plain(", ").join(by_state) if by_state else "none")
    if report["oldest_queued_job_at"]:
        depths.add_row("oldest queued job", when(report["oldest_queued_job_at"], True) + " UTC")
    console.print(depths)
    if report["failed_jobs"]:
        failed = Table(title=f"Failed jobs (last {hours:g} h)")
        for name in ("id", "when (UTC)", "retryable", "error"):
            failed.add_column(name, overflow="fold")
        for job in report["failed_jobs"]:
            failed.add_row(
                str(job["id"]),
                when(job["finished_at"], True),
                "yes" if job["retryable"] else "no",
                plain(job["error"]),
            )
        console.print(failed)
    if report["recent_problems"]:
        problems = Table(title=f"Recent problems (last {hours:g} h)")
        for name in ("when (UTC)", "event", "job", "message"):
            problems.add_column(name, overflow="fold")
        for event in report["recent_problems"]:
            problems.add_row(
                when(event["at"], True),
                plain(event["kind"]),
                str(event["job_id"] or ""),
                plain(event["message"]),
            )
        console.print(problems)
    if not report["failed_jobs"] and not report["recent_problems"]:
        console.print(f"no failures in the last {hours:g} h")
