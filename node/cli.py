"""ctnode's command-line interface."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import ConfigError, Settings, load_settings
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
    config: Annotated[
        Path | None,
        typer.Option("--config", help="site configuration (TOML) on top of config.toml"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: [demo] out_dir)")
    ] = None,
) -> None:
    """Generate a phantom chest CT with known calcium score and show it.

    Writes a DICOM CT series, the volume and labels as NIfTI, truth.json and preview.png.
    (The full demo, sending the series through the node, comes with the node itself.)
    """
    from training.phantoms.case import generate_case
    from training.phantoms.preview import write_preview
    from training.phantoms.writer import write_case

    try:
        settings = load_settings(config)
    except ConfigError as error:
        console.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error
    folder = out or settings.demo.out_dir
    start = time.perf_counter()
    with console.status("generating a phantom chest CT ..."):
        case = generate_case(settings.demo.seed, settings.demo.category)
        write_case(case, folder, dicom=True)
        preview = write_preview(case, folder / "preview.png")
    acq, truth = case.acquisition, case.truth

    table = Table(title=f"Phantom chest CT (seed {case.seed}) in {folder}", show_header=False)
    table.add_row(
        "scan",
        f"{acq.manufacturer} {acq.model}, {acq.kvp:g} kVp, kernel {acq.kernel}, {acq.patient_position}",
    )
    table.add_row(
        "geometry",
        f"{acq.matrix}x{acq.matrix}x{acq.n_slices}, {acq.pixel_spacing_mm:.3f} mm pixels, "
        f"{acq.slice_thickness_mm:g} mm slices every {acq.slice_increment_mm:g} mm",
    )
    table.add_row("Agatston total", f"{truth.total:.1f}")
    table.add_row("per artery", ", ".join(f"{a} {v:.1f}" for a, v in truth.per_artery.items()))
    table.add_row("calcium volume", f"{truth.volume_mm3:.1f} mm3")
    table.add_row(
        "risk category",
        f"{truth.category} ({['0', '1-10', '11-100', '101-400', '>400'][truth.category]}), "
        f"CAC-DRS {truth.cacdrs}",
    )
    table.add_row("lesions", str(len(truth.lesions)))
    table.add_row(
        "files",
        f"dicom/ ({acq.n_slices} files), image.nii.gz, labels.nii.gz, truth.json, {preview.name}",
    )
    table.add_row("time", f"{time.perf_counter() - start:.1f} s")
    console.print(table)


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
) -> None:
    """Score coronary calcium (Agatston) on a CT volume, without any networking."""
    import json

    import SimpleITK as sitk

    from models.calcium.inference import WEIGHTS_DIR, CalciumScorer, ModelFileError, paste_into_scan

    try:
        ct = read_ct(path)
        scorer = CalciumScorer(weights or WEIGHTS_DIR)
        result = scorer.score(ct)
    except (FileNotFoundError, ValueError, ModelFileError, RuntimeError) as error:
        console.print(f"[red]cannot score {path}:[/red] {error}")
        raise typer.Exit(1) from error
    if feedback is not None:
        total = result.feedback_total()
        if total is not None:
            sitk.WriteImage(paste_into_scan(total, ct), str(feedback), True)
    report = result.to_dict()
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table(title=f"Coronary calcium: {path}", show_header=False)
    table.add_row("Agatston total", f"{report['agatston_total']:.1f}")
    table.add_row(
        "per artery", ", ".join(f"{a} {v:.1f}" for a, v in report["agatston_per_artery"].items())
    )
    table.add_row("risk category", f"{report['category_name']} (CAC-DRS {report['cacdrs']})")
    table.add_row("flags", ", ".join(report["flags"]) or "none")
    table.add_row("model", f"{report['model']} on {report['device']}, {report['seconds']:.2f} s")
    console.print(table)
    console.print("Automated estimate from a synthetic-data model; not a diagnosis.")


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


if __name__ == "__main__":
    app()
