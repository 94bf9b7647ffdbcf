"""`ctnode score`, `ctnode segment` and `ctnode inspect`: one CT on this machine, without any
networking (the logic of `segment` is node.cli.segment, the tables of `inspect` are
node.cli.inspect_report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import ConfigOption, JsonOption, console, fail, plain, settings_or_exit
from node.config import ConfigError, load_settings


def score(
    path: Annotated[Path, typer.Argument(help="DICOM folder or NIfTI file of a chest CT")],
    as_json: JsonOption = False,
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

    from models.calcium.inference import WEIGHTS_DIR, CalciumScorer
    from models.calcium.result import empty_scan_map, paste_into_scan
    from models.files import ModelFileError
    from node.volume import read_ct

    try:
        ct = read_ct(path)
        scorer = CalciumScorer(weights or WEIGHTS_DIR, method=method)
        result = scorer.score(ct)
        if heart_check != "registration":
            from node.cli.segment import add_organ_heart_flag

            add_organ_heart_flag(result, ct, heart_check, settings_or_exit(None))
    except (FileNotFoundError, ValueError, ModelFileError, RuntimeError) as error:
        raise fail(f"cannot score {path}:", error) from error
    if feedback is not None:
        total = result.feedback_total()
        scan_map = empty_scan_map(ct) if total is None else paste_into_scan(total, ct)
        sitk.WriteImage(scan_map, str(feedback), True)
    report = result.to_dict()
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table(title=plain(f"Coronary calcium: {path}"), show_header=False)
    per_artery = ", ".join(f"{a} {v:.1f}" for a, v in report["agatston_per_artery"].items())
    if not result.scored:
        table.add_row("Agatston total", "not scorable: contrast-enhanced (no score)")
    elif result.indeterminate:
        untrusted = ", ".join(result.untrusted_flags)
        table.add_row(
            "Agatston total", plain(f"{report['agatston_total']:.1f} NOT VALID ({untrusted})")
        )
        table.add_row("per artery", f"{per_artery} (not valid)")
    else:
        table.add_row("Agatston total", f"{report['agatston_total']:.1f}")
        table.add_row("per artery", per_artery)
    if report["volume_mm3_total"] is not None:
        table.add_row("calcium volume", f"{report['volume_mm3_total']:.1f} mm3")
    cacdrs = report["cacdrs"] or "indeterminate"
    table.add_row("risk category", plain(f"{report['category_name']} (CAC-DRS {cacdrs})"))
    contrast = report["contrast"] or {}
    if contrast:
        blood = contrast["blood_pool_hu"]
        measured = "not measurable" if blood is None else f"{blood:.0f} HU"
        evidence = "; ".join(contrast["evidence"]) or "none"
        table.add_row(
            "contrast",
            plain(
                f"{'enhanced' if contrast['enhanced'] else 'not enhanced'}: blood pool {measured} "
                f"(enhanced above {contrast['threshold_hu']:g} HU); evidence: {evidence}"
            ),
        )
    noise = report["noise"] or {}
    if noise:
        measured = "not measurable" if noise["sd_hu"] is None else f"{noise['sd_hu']:.1f} HU"
        table.add_row(
            "image noise",
            plain(f"{measured} around the heart (not trusted above {noise['limit_hu']:g} HU)"),
        )
    if report["method"] != "regression" and report["regression_total"] is not None:
        table.add_row(
            "method", f"{report['method']} (direct regression: {report['regression_total']:.1f})"
        )
    else:
        table.add_row("method", plain(report["method"]))
    table.add_row("flags", plain(", ".join(report["flags"]) or "none"))
    table.add_row(
        "model", plain(f"{report['model']} on {report['device']}, {report['seconds']:.2f} s")
    )
    console.print(table)
    console.print("Automated estimate from a synthetic-data model; not a diagnosis.")


def segment(
    path: Annotated[Path, typer.Argument(help="DICOM folder or NIfTI file of a CT")],
    out: Annotated[
        Path, typer.Option("--out", help="x.nii.gz: label map; x.dcm: DICOM SEG (DICOM input)")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="organ model name (default: [organs] model)")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Segment the organs of a CT (label map or DICOM SEG) and print their volumes, offline."""
    import json

    from models.files import ModelFileError
    from node.cli.segment import SegmentError, print_report, segment_path

    try:
        report = segment_path(path, out, settings_or_exit(config), model)
    except (SegmentError, ModelFileError) as error:
        raise fail(f"cannot segment {path}:", error) from error
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_report(console, report)


def inspect(
    path: Annotated[Path, typer.Argument(help="DICOM folder (searched recursively) or file")],
    export: Annotated[
        Path | None,
        typer.Option("--export", help="write each assembled stack here as NIfTI (int16 HU)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: ConfigOption = None,
) -> None:
    """Show the stacks in a folder, their geometry and what the node would do with each."""
    import json

    from node.cli.inspect_report import export_stacks, plan_as_dict, print_plan
    from node.volume import plan_folder

    try:
        settings = load_settings(config)
        plan = plan_folder(path, settings.assembly)
    except (ConfigError, FileNotFoundError) as error:
        raise fail(f"cannot inspect {path}:", error, code=2) from error
    written = export_stacks(plan, export, settings.assembly) if export is not None else {}
    if as_json:
        report = plan_as_dict(plan)
        report["exported"] = {label: str(file) for label, file in written.items()}
        print(json.dumps(report, indent=1))
        return
    print_plan(plan, console, title=str(path))
    for label, file in written.items():
        console.print(f"exported {label} -> {file}", markup=False)
