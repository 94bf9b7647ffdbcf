"""ctnode's command-line interface."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import ConfigError, load_settings

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


if __name__ == "__main__":
    app()
