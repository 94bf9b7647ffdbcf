"""`ctnode serve`, `ctnode demo` and `ctnode echo`: run the node, show it end to end on a
phantom (the runner is node.cli.demo), check a DICOM connection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.cli.common import ConfigOption, console, fail, plain, settings_or_exit
from node.cli.jobs import print_job
from node.config import ConfigError


def serve(config: ConfigOption = None) -> None:
    """Run the node (DICOM listener) in the foreground until SIGTERM or Ctrl-C."""
    from node.service import configure_logging
    from node.service import serve as run_service

    settings = settings_or_exit(config)
    configure_logging()
    try:
        run_service(settings)
    except OSError as error:  # e.g. the port is taken
        raise fail("cannot start:", error) from error


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

    from node.cli.demo import DemoError, run_demo
    from node.service import configure_logging

    settings = settings_or_exit(config)
    folder = out or settings.demo.out_dir
    if not _calcium_model_installed(settings):
        _phantom_only_demo(settings, Path(folder))
        return
    configure_logging(logging.WARNING)  # the job log is printed at the end instead
    try:
        with console.status("") as spinner:
            run = run_demo(settings, folder, progress=spinner.update)
    except DemoError as error:
        raise fail("demo failed:", error) from error
    print_demo(run)
    if run.job is None or run.job["state"] != "done" or run.report is None:
        raise typer.Exit(1)


def _calcium_model_installed(settings) -> bool:
    from models.calcium.inference import load_manifest
    from models.files import ModelFileError

    try:
        load_manifest(settings.calcium.weights_path())
    except ModelFileError:
        return False
    return True


def _phantom_only_demo(settings, folder: Path) -> None:
    """Without a calcium model the node cannot score, and a made-up model must not pretend to:
    the demo writes the phantom case and says what is missing (exit 0: that part worked)."""
    from node.cli.demo import write_phantom

    truth, files = write_phantom(settings, folder)
    console.print(
        f"Phantom chest CT (seed {truth['seed']}): {len(files)} DICOM slices, NIfTI, truth.json "
        f"and preview.png in {folder}; reference Agatston score {truth['agatston_total']:.1f} "
        f"(category {truth['category']}).",
        markup=False,
    )
    console.print(
        f"[yellow]No calcium model is installed in {escape(str(settings.calcium.weights_path()))}"
        "[/yellow]: the node end-to-end part of the demo (C-STORE to the node, SR + SEG + "
        "overlay back) needs one: the shipped model is missing from this installation "
        "(docs/models/calcium.md); reinstall ctnode, train one with "
        "`python -m training.calcium.train_all` or set \\[calcium] weights_dir, then rerun "
        "`ctnode demo`."
    )


def print_demo(run) -> None:
    """What the demo shows: the case, the score against the truth, the job log, the files."""
    truth = run.truth
    acq = truth["acquisition"]
    shape = truth["geometry"]["shape_zyx"]
    case = Table(
        title=plain(f"Phantom chest CT (seed {truth['seed']}) in {run.folder}"), show_header=False
    )
    case.add_row(
        "scan",
        plain(
            f"{acq['manufacturer']} {acq['model']}, {acq['kvp']:g} kVp, kernel {acq['kernel']}, "
            f"{acq['patient_position']}"
        ),
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
        if report.agatston_total is None:
            node_total = f"not scorable: {report.not_scorable}"
        else:
            valid = "" if report.values_valid else " (not valid)"
            node_total = f"{report.agatston_total:.1f}{valid}"
        scores.add_row("Agatston total", plain(node_total), f"{truth['agatston_total']:.1f}")
        for artery in ("LAD", "LCX", "RCA"):
            value = report.agatston_per_artery.get(artery)
            scores.add_row(
                artery, "" if value is None else f"{value:.1f}", f"{per_artery_truth[artery]:.1f}"
            )
        scores.add_row(
            "risk category",
            "indeterminate"
            if report.category is None
            else f"{report.category} ({names[report.category]})",
            f"{truth['category']} ({names[truth['category']]})",
        )
        scores.add_row("CAC-DRS", plain(report.cacdrs or "indeterminate"), plain(truth["cacdrs"]))
        scores.add_row("flags", plain(", ".join(report.flags) or "none"), "")
        scores.add_row("model", plain(f"{report.algorithm_name} {report.algorithm_version}"), "")
    else:
        scores.add_row("Agatston total", "no SR returned", f"{truth['agatston_total']:.1f}")
    console.print(scores)
    files = Table(title="Files", show_header=False)
    files.add_row("phantom", "dicom/, image.nii.gz, labels.nii.gz, truth.json, preview.png")
    files.add_row(
        "returned", ", ".join(f"returned/{p.name}" for p in run.returned.values()) or "none"
    )
    if run.overlay_png is not None:
        files.add_row("overlay", plain(run.overlay_png.name))
    files.add_row("node data", "node/ (database, spool, outbox)")
    console.print(files)
    console.print(
        f"phantom {run.seconds['phantom']:.1f} s; last instance -> results back "
        f"{run.seconds.get('after_last_instance', 0):.1f} s (completion timeout included); "
        f"total {run.seconds['total']:.1f} s"
    )
    console.print("Automated estimate from a synthetic-data model; not a diagnosis.")


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
    from node.tls import client_context

    settings = settings_or_exit(config)
    try:
        remote = resolve_remote(target, settings)
    except ConfigError as error:
        raise fail(str(error), code=2) from error
    tls_context = client_context(settings.tls) if remote.tls else None
    result = send_echo(remote, settings.node.ae_title, timeout, tls_context)
    where = escape(str(remote) if "@" in remote.name else f"{remote.name} ({remote})")
    status = "" if result.status is None else f" status 0x{result.status:04X}"
    if result.ok:
        console.print(
            f"C-ECHO {where}: [green]success[/green]{status} in {result.seconds * 1000:.0f} ms"
        )
        return
    console.print(f"C-ECHO {where}: [red]failed[/red]{status}: {escape(str(result.message))}")
    raise typer.Exit(1)
