"""ctnode's command-line interface."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import sessionmaker

from node.config import ConfigError, Settings, load_settings
from node.models_cli import models_app
from node.volume import read_ct

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="ctnode: coronary calcium on chest CT"
)
console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="site configuration (TOML) on top of config.toml"),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as error:
        console.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error


@app.callback()
def main() -> None:
    """ctnode: a DICOM node that scores coronary artery calcium on chest CT."""


@app.command()
def demo(
    config: ConfigOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: [demo] out_dir)")
    ] = None,
) -> None:
    """The node end to end on a phantom chest CT with known calcium score.

    Starts the node and a stand-in PACS, sends a phantom CT series by C-STORE, waits for the
    SR, SEG and Secondary Capture to come back, and prints the score next to the truth and the
    job's log. Writes the case (dicom/, NIfTI, truth.json, preview.png), the returned objects
    (returned/) and the returned overlay (overlay.png).
    """
    import logging

    from node.demo import DemoError, run_demo
    from node.service import configure_logging

    settings = _settings(config)
    folder = out or settings.demo.out_dir
    if not _calcium_model_installed(settings):
        _phantom_only_demo(settings, Path(folder))
        return
    configure_logging(logging.WARNING)  # the job log is printed at the end instead
    try:
        with console.status("") as spinner:
            run = run_demo(settings, folder, progress=spinner.update)
    except DemoError as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(1) from error
    print_demo(run)
    if run.job is None or run.job["state"] != "done" or run.report is None:
        raise typer.Exit(1)


def _calcium_model_installed(settings) -> bool:
    from models.calcium.inference import ModelFileError, load_manifest

    try:
        load_manifest(settings.calcium.weights_path())
    except ModelFileError:
        return False
    return True


def _phantom_only_demo(settings, folder: Path) -> None:
    """Without a calcium model the node cannot score, and a made-up model must not pretend to:
    the demo writes the phantom case and says what is missing (exit 0: that part worked)."""
    from node.demo import write_phantom

    truth, files = write_phantom(settings, folder)
    console.print(
        f"Phantom chest CT (seed {truth['seed']}): {len(files)} DICOM slices, NIfTI, truth.json "
        f"and preview.png in {folder}; reference Agatston score {truth['agatston_total']:.1f} "
        f"(category {truth['category']})."
    )
    console.print(
        f"[yellow]No calcium model is installed in {settings.calcium.weights_path()}[/yellow]: "
        "the node end-to-end part of the demo (C-STORE to the node, SR + SEG + overlay back) "
        "needs one. None is shipped yet (README: Coronary calcium models); train one with "
        "`python -m training.calcium.train_all` or set \\[calcium] weights_dir, then rerun "
        "`ctnode demo`."
    )


def print_demo(run) -> None:
    """What the demo shows: the case, the score against the truth, the job log, the files."""
    truth = run.truth
    acq = truth["acquisition"]
    shape = truth["geometry"]["shape_zyx"]
    case = Table(
        title=f"Phantom chest CT (seed {truth['seed']}) in {run.folder}", show_header=False
    )
    case.add_row(
        "scan",
        f"{acq['manufacturer']} {acq['model']}, {acq['kvp']:g} kVp, kernel {acq['kernel']}, "
        f"{acq['patient_position']}",
    )
    case.add_row(
        "geometry",
        f"{shape[2]}x{shape[1]}x{shape[0]}, {acq['slice_thickness_mm']:g} mm slices every "
        f"{acq['slice_increment_mm']:g} mm",
    )
    case.add_row(
        "sent",
        f"{run.instances} instances by C-STORE in {run.send_seconds:.1f} s (calling AE DEMO-PACS)",
    )
    console.print(case)
    if run.job is not None:
        print_job(run.job)
    names = ["0", "1-10", "11-100", "101-400", ">400"]
    scores = Table(title="Calcium score: returned SR vs phantom truth")
    for name in ("", "node (SR)", "truth"):
        scores.add_column(name, justify="right" if name else "left")
    report = run.report
    per_artery_truth = truth["agatston_per_artery"]
    if report is not None:
        scores.add_row(
            "Agatston total", f"{report.agatston_total:.1f}", f"{truth['agatston_total']:.1f}"
        )
        for artery in ("LAD", "LCX", "RCA"):
            value = report.agatston_per_artery.get(artery)
            scores.add_row(
                artery, "" if value is None else f"{value:.1f}", f"{per_artery_truth[artery]:.1f}"
            )
        scores.add_row(
            "risk category",
            f"{report.category} ({names[report.category]})",
            f"{truth['category']} ({names[truth['category']]})",
        )
        scores.add_row("CAC-DRS", report.cacdrs, truth["cacdrs"])
        scores.add_row("flags", ", ".join(report.flags) or "none", "")
        scores.add_row("model", f"{report.algorithm_name} {report.algorithm_version}", "")
    else:
        scores.add_row("Agatston total", "no SR returned", f"{truth['agatston_total']:.1f}")
    console.print(scores)
    files = Table(title="Files", show_header=False)
    files.add_row("phantom", "dicom/, image.nii.gz, labels.nii.gz, truth.json, preview.png")
    files.add_row(
        "returned", ", ".join(f"returned/{p.name}" for p in run.returned.values()) or "none"
    )
    if run.overlay_png is not None:
        files.add_row("overlay", str(run.overlay_png.name))
    files.add_row("node data", "node/ (database, spool, outbox)")
    console.print(files)
    console.print(
        f"phantom {run.seconds['phantom']:.1f} s; last instance -> results back "
        f"{run.seconds.get('after_last_instance', 0):.1f} s (completion timeout included); "
        f"total {run.seconds['total']:.1f} s"
    )
    console.print("Automated estimate from a synthetic-data model; not a diagnosis.")


@app.command()
def score(
    path: Annotated[Path, typer.Argument(help="DICOM folder or NIfTI file of a chest CT")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    feedback: Annotated[
        Path | None, typer.Option("--feedback", help="write the score map (NIfTI) here")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="model folder (default: models/weights)")
    ] = None,
    heart_check: Annotated[
        str,
        typer.Option(
            "--heart-check",
            help="registration (default) or organs: also flag heart_not_in_field_of_view "
            "from the [organs] model, as [calcium] heart_check = organs does in the node",
        ),
    ] = "registration",
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="exact (the network labels the scan's candidate voxels, the Agatston "
            "definition scores them) or regression (the network's map summed); default: the "
            "model's manifest",
        ),
    ] = None,
) -> None:
    """Score coronary calcium (Agatston) on a CT volume, without any networking."""
    import json

    import SimpleITK as sitk

    from models.calcium.inference import WEIGHTS_DIR, CalciumScorer, ModelFileError
    from models.calcium.result import empty_scan_map, paste_into_scan

    try:
        ct = read_ct(path)
        scorer = CalciumScorer(weights or WEIGHTS_DIR, method=method)
        result = scorer.score(ct)
        if heart_check != "registration":
            from node.segment import add_organ_heart_flag

            add_organ_heart_flag(result, ct, heart_check, _settings(None))
    except (FileNotFoundError, ValueError, ModelFileError, RuntimeError) as error:
        console.print(f"[red]cannot score {path}:[/red] {error}")
        raise typer.Exit(1) from error
    if feedback is not None:
        total = result.feedback_total()
        scan_map = empty_scan_map(ct) if total is None else paste_into_scan(total, ct)
        sitk.WriteImage(scan_map, str(feedback), True)
    report = result.to_dict()
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table(title=f"Coronary calcium: {path}", show_header=False)
    table.add_row("Agatston total", f"{report['agatston_total']:.1f}")
    table.add_row(
        "per artery", ", ".join(f"{a} {v:.1f}" for a, v in report["agatston_per_artery"].items())
    )
    if report["volume_mm3_total"] is not None:
        table.add_row("calcium volume", f"{report['volume_mm3_total']:.1f} mm3")
    table.add_row("risk category", f"{report['category_name']} (CAC-DRS {report['cacdrs']})")
    table.add_row(
        "method",
        f"{report['method']} (direct regression: {report['regression_total']:.1f})"
        if report["method"] != "regression"
        else "regression",
    )
    table.add_row("flags", ", ".join(report["flags"]) or "none")
    table.add_row("model", f"{report['model']} on {report['device']}, {report['seconds']:.2f} s")
    console.print(table)
    console.print("Automated estimate from a synthetic-data model; not a diagnosis.")


@app.command()
def segment(
    path: Annotated[Path, typer.Argument(help="DICOM folder or NIfTI file of a CT")],
    out: Annotated[
        Path, typer.Option("--out", help="x.nii.gz: label map; x.dcm: DICOM SEG (DICOM input)")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="organ model name (default: [organs] model)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOption = None,
) -> None:
    """Segment the organs of a CT (label map or DICOM SEG) and print their volumes, offline."""
    import json

    from models.organs.registry import ModelFileError
    from node.segment import SegmentError, print_report, segment_path

    try:
        report = segment_path(path, out, _settings(config), model)
    except (SegmentError, ModelFileError) as error:
        console.print(f"[red]cannot segment {path}:[/red] {error}")
        raise typer.Exit(1) from error
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_report(console, report)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the node (DICOM listener) in the foreground until SIGTERM or Ctrl-C."""
    from node.service import configure_logging
    from node.service import serve as run_service

    settings = _settings(config)
    configure_logging()
    try:
        run_service(settings)
    except OSError as error:  # e.g. the port is taken
        console.print(f"[red]cannot start:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def echo(
    target: Annotated[
        str, typer.Argument(help="a [[destinations]] or [[peers]] name, or AE@HOST:PORT")
    ],
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 10.0,
) -> None:
    """Check a DICOM connection with C-ECHO, calling with the node's own AE title."""
    from node.scu import echo as send_echo
    from node.scu import resolve_remote

    settings = _settings(config)
    try:
        remote = resolve_remote(target, settings)
    except ConfigError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    result = send_echo(remote, settings.node.ae_title, timeout)
    where = str(remote) if "@" in remote.name else f"{remote.name} ({remote})"
    status = "" if result.status is None else f" status 0x{result.status:04X}"
    if result.ok:
        console.print(
            f"C-ECHO {where}: [green]success[/green]{status} in {result.seconds * 1000:.0f} ms"
        )
        return
    console.print(f"C-ECHO {where}: [red]failed[/red]{status}: {result.message}")
    raise typer.Exit(1)


def _abbreviated_uid(uid: str, keep: int = 10) -> str:
    """The end of a UID, where UIDs of one site differ (the start is the site's root)."""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


@app.command()
def series(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    limit: Annotated[int, typer.Option("--limit", help="most recent N series")] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="full UIDs in the table")] = False,
) -> None:
    """List received series, the most recently active first (UIDs abbreviated; --wide or
    --json for the full ones)."""
    import json

    from node.db import init_db, list_series, make_session_factory

    settings = _settings(config)
    engine = init_db(settings.storage.database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = [
                {
                    "id": s.id,
                    "study_uid": s.study_uid,
                    "series_uid": s.series_uid,
                    "modality": s.modality,
                    "instances": s.instance_count,
                    "sender_ae": s.sender_ae,
                    "first_received_at": s.first_received_at.isoformat(),
                    "last_received_at": s.last_received_at.isoformat(),
                    "completed_at": s.completed_at.isoformat() if s.completed_at else None,
                    "state": s.state.value,
                }
                for s in list_series(session, limit)
            ]
    finally:
        engine.dispose()
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
            [row["series_uid"], row["study_uid"]] if wide else [_abbreviated_uid(row["series_uid"])]
        )
        table.add_row(
            str(row["id"]),
            *uids,
            row["modality"] or "",
            str(row["instances"]),
            row["sender_ae"],
            row["first_received_at"][:19].replace("T", " "),
            row["last_received_at"][11:19],
            row["state"],
        )
    console.print(table)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="DICOM folder (searched recursively) or file")],
    export: Annotated[
        Path | None,
        typer.Option("--export", help="write each assembled stack here as NIfTI (int16 HU)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="site configuration (TOML) on top of config.toml"),
    ] = None,
) -> None:
    """Show the stacks in a folder, their geometry and what the node would do with each."""
    import json

    from node.inspect_report import export_stacks, plan_as_dict, print_plan
    from node.volume import plan_folder

    try:
        settings = load_settings(config)
        plan = plan_folder(path, settings.assembly)
    except (ConfigError, FileNotFoundError) as error:
        console.print(f"[red]cannot inspect {path}:[/red] {error}")
        raise typer.Exit(2) from error
    written = export_stacks(plan, export, settings.assembly) if export is not None else {}
    if as_json:
        report = plan_as_dict(plan)
        report["exported"] = {label: str(file) for label, file in written.items()}
        print(json.dumps(report, indent=1))
        return
    print_plan(plan, console, title=str(path))
    for label, file in written.items():
        console.print(f"exported {label} -> {file}")


@contextmanager
def _database(settings: Settings) -> Iterator[sessionmaker]:
    """The node's database (migrated to the newest schema), as a session factory."""
    from node.db import init_db, make_session_factory

    engine = init_db(settings.storage.database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _when(iso: str | None, with_date: bool = False) -> str:
    if not iso:
        return ""
    return iso[:19].replace("T", " ") if with_date else iso[11:19]


def _seconds(value: float | None) -> str:
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


def _state(value: str | None) -> str:
    if not value:
        return ""
    colour = STATE_COLOURS.get(value)
    return f"[{colour}]{value}[/{colour}]" if colour else value


jobs_app = typer.Typer(
    help="Jobs (one per series and pipeline): list, show one with its log, retry a failed one."
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")  # ctnode models import|list (node/models_cli.py)


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
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List jobs, the newest first (`ctnode jobs show ID` for one job's log)."""
    import json

    from node.admin import list_jobs, parse_since
    from node.db import JobState

    if context.invoked_subcommand is not None:
        return
    settings = _settings(config)
    if status is not None and status not in {s.value for s in JobState}:
        console.print(f"[red]--status: one of {', '.join(s.value for s in JobState)}[/red]")
        raise typer.Exit(2)
    try:
        since_at = parse_since(since) if since else None
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    with _database(settings) as sessions, sessions() as session:
        rows = list_jobs(session, status, since_at, limit)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("no jobs" + (f" in state {status}" if status else ""))
        return
    table = Table(title=f"Jobs (newest {len(rows)}, times in UTC)")
    for name in ("id", "pipeline", "state", "series UID", "inst", "sender", "created", "took"):
        table.add_column(name, overflow="fold")
    table.add_column("error", overflow="fold", max_width=50)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["pipeline"],
            _state(row["state"]),
            _abbreviated_uid(row["series_uid"]),
            str(row["instances"]),
            row["sender_ae"],
            _when(row["created_at"], with_date=True),
            _seconds(row["seconds"]),
            row["error"] or "",
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

    settings = _settings(config)
    with _database(settings) as sessions, sessions() as session:
        job = show_job(session, job_id)
    if job is None:
        console.print(f"[red]no job #{job_id}[/red]")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(job, indent=1))
        return
    print_job(job)


def print_job(job: dict) -> None:
    """A job as `ctnode jobs show` prints it (the demo prints the same)."""
    series = job["series"]
    summary = Table(title=f"Job #{job['id']} ({job['pipeline']})", show_header=False)
    summary.add_row("state", _state(job["state"]) + (f": {job['error']}" if job["error"] else ""))
    summary.add_row("series", f"{series['series_uid']} ({series['modality'] or '?'})")
    summary.add_row("study", series["study_uid"])
    summary.add_row(
        "received",
        f"{series['instances']} instances from {series['sender_ae']}, "
        f"{_when(series['first_received_at'], True)} - {_when(series['last_received_at'])} UTC",
    )
    if job["superseded_by"]:
        summary.add_row("superseded by", f"job #{job['superseded_by']}")
    summary.add_row("attempts", str(job["attempts"]))
    console.print(summary)

    stages = Table(title="Time in each state")
    for name in ("state", "from (UTC)", "time"):
        stages.add_column(name)
    for stage in job["stages"]:
        time_text = _seconds(stage["seconds"]) + (" (so far)" if stage["ongoing"] else "")
        stages.add_row(_state(stage["state"]), _when(stage["at"]), time_text)
    console.print(stages)

    log = Table(title="Job log")
    for name in ("time (UTC)", "event", "message"):
        log.add_column(name, overflow="fold")
    for event in job["events"]:
        log.add_row(_when(event["at"]), event["kind"], event["message"])
    console.print(log)

    if job["outputs"]:
        outputs = Table(title="Outputs")
        for name in ("kind", "SOP instance UID", "bytes"):
            outputs.add_column(name, overflow="fold")
        for output in job["outputs"]:
            outputs.add_row(output["kind"], output["sop_instance_uid"], str(output["size_bytes"]))
        console.print(outputs)
    if job["deliveries"]:
        deliveries = Table(title="Deliveries")
        for name in ("id", "destination", "state", "tries", "sent / next try", "last error"):
            deliveries.add_column(name, overflow="fold")
        for d in job["deliveries"]:
            deliveries.add_row(
                str(d["id"]),
                d["destination"],
                _state(d["state"]),
                str(d["attempts"]),
                _when(d["sent_at"] or d["next_attempt_at"]),
                d["last_error"] or "",
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

    settings = _settings(config)
    with _database(settings) as sessions:
        try:
            message = retry_job(sessions, job_id)
        except (JobNotFoundError, ValueError) as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(1) from error
    console.print(message)


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    hours: Annotated[float, typer.Option("--hours", help="window of recent failures")] = 24.0,
) -> None:
    """Queue depths (series, jobs, deliveries by state) and recent failures."""
    import json
    from datetime import timedelta

    from node.admin import status as node_status

    settings = _settings(config)
    with _database(settings) as sessions, sessions() as session:
        report = node_status(session, timedelta(hours=hours))
    if as_json:
        print(json.dumps(report, indent=1))
        return
    depths = Table(title="Queues")
    depths.add_column("what")
    depths.add_column("by state")
    for what in ("series", "jobs", "deliveries"):
        depths.add_row(
            what, ", ".join(f"{_state(k)} {v}" for k, v in report[what].items() if v) or "none"
        )
    if report["oldest_queued_job_at"]:
        depths.add_row("oldest queued job", _when(report["oldest_queued_job_at"], True) + " UTC")
    console.print(depths)
    if report["failed_jobs"]:
        failed = Table(title=f"Failed jobs (last {hours:g} h)")
        for name in ("id", "when (UTC)", "retryable", "error"):
            failed.add_column(name, overflow="fold")
        for job in report["failed_jobs"]:
            failed.add_row(
                str(job["id"]),
                _when(job["finished_at"], True),
                "yes" if job["retryable"] else "no",
                job["error"] or "",
            )
        console.print(failed)
    if report["recent_problems"]:
        problems = Table(title=f"Recent problems (last {hours:g} h)")
        for name in ("when (UTC)", "event", "job", "message"):
            problems.add_column(name, overflow="fold")
        for event in report["recent_problems"]:
            problems.add_row(
                _when(event["at"], True),
                event["kind"],
                str(event["job_id"] or ""),
                event["message"],
            )
        console.print(problems)
    if not report["failed_jobs"] and not report["recent_problems"]:
        console.print(f"no failures in the last {hours:g} h")


if __name__ == "__main__":
    app()
