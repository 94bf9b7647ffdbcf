"""`ctnode models`: import published organ-segmentation weights, list the installed models.

A sub-app of node.cli (registered there as `models`). Imported models go to `[organs] models_dir`; `[organs] model` names the one the
organs pipeline uses (empty: the shipped base model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from node.cli.common import ConfigOption, console, fail, new_typer, plain, settings_or_exit

models_app = new_typer(
    no_args_is_help=True,
    help="Organ-segmentation models: import published weights (.h5, .onnx), list installed ones.",
)


def _organs(config: Path | None):
    """(models_dir, configured model name, settings) from the configuration."""
    settings = settings_or_exit(config)
    return settings.organs.models_dir, settings.organs.model, settings


def _users(spec_path: Path | None, settings) -> dict[Path, list[str]]:
    """Spec path -> pipelines that use it, from the configuration."""
    users: dict[Path, list[str]] = {}
    if spec_path is not None:
        users.setdefault(spec_path.resolve(), []).append("organs")
        if getattr(settings.calcium, "heart_check", "") == "organs":
            users[spec_path.resolve()].append("calcium (heart check)")
    return users


@models_app.command("import")
def import_model(
    file: Annotated[Path, typer.Argument(help="Keras .h5 (full model or weights) or .onnx file")],
    name: Annotated[
        str | None, typer.Option("--name", help="model name (default: from the file name)")
    ] = None,
    spacing: Annotated[
        tuple[float, float, float],
        typer.Option(
            "--spacing",
            help="voxel spacing Z Y X (mm) to resample to; the paper does not state it",
        ),
    ] = (1.5, 1.5, 1.5),
    input_side: Annotated[
        int, typer.Option("--input-side", help="window cube side, 92 + 8k (published: 132)")
    ] = 132,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="comma-separated structure names of the foreground channels, in order "
            "(only for a network without the published 23 channels)",
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="replace an imported model of the same name")
    ] = False,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            metavar="HEX",
            help="the publisher's sha256 of the file: import only when it matches",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Convert U-Net weights (Keras 2/3 .h5, Keras 3 .weights.h5, .onnx) and install them
    with a model card.

    Prints the file's sha256; with --sha256 a file that does not match (damaged, or not the
    published one) is refused and nothing is installed. The model goes to [organs] models_dir;
    its card records the sha256 of the source file and of the converted weights, the source,
    the label table and the assumed spacing."""
    from models.files import ModelFileError
    from models.organs.install import install_imported, read_source

    models_dir, _, _ = _organs(config)
    try:
        source = read_source(file, sha256)
        check = "matches --sha256" if sha256 else "compare it with the publisher's value"
        console.print(f"{file}: sha256 {source.sha256} ({check})", markup=False, highlight=False)
        spec = install_imported(
            source,
            models_dir,
            name=name,
            spacing_mm=spacing,
            input_side=input_side,
            labels=labels.split(",") if labels else None,
            replace=replace,
        )
    except ModelFileError as error:
        raise fail(f"cannot import {file}:", error) from error
    assert spec.path is not None
    console.print(
        f"imported [bold]{escape(spec.name)}[/bold]: width {spec.width}, {spec.n_classes} channels, "
        f"spacing {' x '.join(f'{v:g}' for v in spec.spacing_mm)} mm (assumed), "
        f"window {spec.input_side}"
    )
    console.print(f"  {spec.path.parent}  (card: {spec.card})", markup=False)
    console.print(
        f'Use it in the organs pipeline with [organs] model = "{spec.name}" '
        f"(or CTNODE_ORGANS__MODEL={spec.name}).",
        markup=False,
    )


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOption = None,
) -> None:
    """Installed organ models and which one each pipeline uses.

    Shipped and imported models, each with its weight check (sha256 against its spec)."""
    from models.organs import registry

    models_dir, configured, settings = _organs(config)
    try:
        used_path = registry.find(configured or None, models_dir)
        missing = None
    except registry.ModelFileError as error:
        used_path, missing = None, str(error)
    users = _users(used_path, settings)
    rows = []
    for spec in registry.installed_models(models_dir):
        assert spec.path is not None
        try:
            registry.verify_weights(spec)
            weights = "ok"
        except registry.ModelFileError as error:
            weights = str(error)
        rows.append(
            {
                **spec.to_json(),
                "spec_path": str(spec.path),
                "kind": "shipped" if registry.is_shipped(spec) else "imported",
                "weights_check": weights,
                "used_by": users.get(spec.path.resolve(), []),
            }
        )
    if as_json:
        print(
            json.dumps(
                {
                    "models_dir": str(models_dir),
                    "organs_model": configured,
                    "organs_model_problem": missing,
                    "models": rows,
                },
                indent=1,
            )
        )
        return
    table = Table(title=plain(f"Organ models (imported ones in {models_dir})"))
    for column in (
        "name",
        "kind",
        "width",
        "classes",
        "spacing mm",
        "window",
        "weights",
        "used by",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            plain(row["name"]),
            row["kind"],
            str(row["width"]),
            str(row["n_classes"]),
            " x ".join(f"{v:g}" for v in row["spacing_mm"]),
            str(row["input_side"]),
            "ok" if row["weights_check"] == "ok" else Text(row["weights_check"], style="red"),
            ", ".join(row["used_by"]),
        )
    if rows:
        console.print(table)
    else:
        console.print("no organ models installed")
    if missing:
        console.print(f"[red]the organs pipeline's model is not available:[/red] {escape(missing)}")
