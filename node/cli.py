"""ctnode's command-line interface."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import ConfigError, load_settings
from node.volume import read_ct

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="ctnode: coronary calcium on chest CT"
)
console = Console()


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
