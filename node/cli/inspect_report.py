"""What `ctnode inspect` shows and exports: a folder's plan as tables, JSON and NIfTI files.

For PACS administrators debugging a routing rule: every stack with its geometry and the
node's decision, every excluded group of images with the reason. UIDs, never patient data.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from node.config import AssemblySettings
from node.volume.assembly import assemble
from node.volume.geometry import AssemblyError
from node.volume.read import StackPlan, VolumePlan
from node.volume.selection import is_contrast_enhanced, kernel_class


def _stack_dict(plan: StackPlan, reason: str) -> dict:
    stack, geometry = plan.stack, plan.geometry
    first = stack.first
    out = {
        "label": stack.label,
        "name": stack.name,
        "series_uid": stack.series_uid,
        "series_number": first.series_number,
        "images": len(stack.frames),
        "plane": stack.plane,
        "kernel": first.kernel,
        "kernel_class": kernel_class(first.kernel),
        "thickness_mm": stack.thickness,
        "image_type": "\\".join(first.image_type),
        "contrast": is_contrast_enhanced(stack),
        "split_by": list(stack.split_by),
        "decision": reason,
        "error": plan.error,
    }
    if geometry is not None:
        low, high = geometry.spacing_range
        out.update(
            size=list(geometry.size),
            spacing_mm=[round(v, 4) for v in geometry.spacing],
            origin_mm=[round(v, 3) for v in geometry.origin],
            direction=[round(v, 5) for v in geometry.direction],
            coverage_mm=round(geometry.coverage_mm, 1),
            input_spacing_mm=[round(low, 3), round(high, 3)],
            tilt_deg=round(geometry.tilt_deg, 2),
            resampled=geometry.resampled,
            notes=list(geometry.notes),
        )
    return out


def plan_as_dict(plan: VolumePlan) -> dict:
    reasons = plan.selection.reasons
    return {
        "stacks": [_stack_dict(p, reasons.get(p.stack.label, "")) for p in plan.stacks],
        "chosen_for_calcium": plan.selection.chosen.label if plan.selection.chosen else None,
        "excluded": [
            {"label": e.label, "series_uid": e.series_uid, "images": e.count, "reason": e.reason}
            for e in plan.scan.excluded
        ],
        "unreadable": [{"path": str(u.path), "reason": u.reason} for u in plan.scan.unreadable],
    }


def _mm(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _pixel_and_increment(spacing: list[float]) -> tuple[str, str]:
    """'0.488' (or '0.5x0.6' when rows and columns differ) and the slice increment, in mm."""
    if not spacing:
        return "-", "-"
    columns, rows, increment = spacing
    pixel = _mm(columns) if abs(columns - rows) < 1e-4 else f"{_mm(columns)}x{_mm(rows)}"
    return pixel, _mm(increment)


def print_plan(plan: VolumePlan, console: Console, title: str) -> None:
    """The plan for a person at a server's terminal (80 columns are enough): one short table
    of the stacks' geometry, then each stack's decision and notes as wrapped lines."""
    report = plan_as_dict(plan)
    table = Table(
        title=Text(f"Stacks in {title}"),
        caption="thick: slice thickness, step: slice increment, pixel: pixel size (mm)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),  # two spaces between columns: 80 terminal columns are enough
        pad_edge=False,
    )
    for column in ("stack", "images", "plane", "kernel", "thick", "step", "pixel", "size"):
        table.add_column(column, no_wrap=True)
    for item in report["stacks"]:
        pixel, increment = _pixel_and_increment(item.get("spacing_mm", []))
        table.add_row(  # Text: kernels and labels come from the DICOM headers, not markup
            Text(item["label"]),
            str(item["images"]),
            item["plane"],
            Text(f"{item['kernel']} ({item['kernel_class']})"),
            f"{item['thickness_mm']:g}" if item["thickness_mm"] else "-",
            increment,
            pixel,
            "x".join(str(v) for v in item.get("size", [])) or "-",
        )
    console.print(table)
    for item in report["stacks"]:
        line = Text(f"{item['label']}: ", style="bold")
        chosen = item["decision"].startswith("chosen")
        line.append(item["decision"] or "-", style="green" if chosen else None)
        console.print(line)
        for note in item.get("notes", []):
            console.print(Padding(Text(f"note: {note}"), (0, 0, 0, 2)))
        if item["error"]:
            console.print(Padding(Text(f"error: {item['error']}", style="red"), (0, 0, 0, 2)))
    chosen = report["chosen_for_calcium"]
    console.print(Text(f"calcium scoring: {'stack ' + chosen if chosen else 'no suitable stack'}"))
    if report["excluded"]:
        console.print(Text("Excluded", style="bold"))
        for item in report["excluded"]:
            images = f"{item['images']} image{'s' if item['images'] != 1 else ''}"
            console.print(Text(f"  {item['label']} ({images}): {item['reason']}"))
            if item["series_uid"]:
                console.print(Text(f"    series {item['series_uid']}", style="dim"))
    if report["unreadable"]:
        console.print(f"{len(report['unreadable'])} files are not DICOM images (skipped)")


def export_stacks(plan: VolumePlan, folder: Path, settings: AssemblySettings) -> dict[str, Path]:
    """Each stack that assembles as `<name>.nii.gz` (int16 HU); returns label -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stack_plan in plan.stacks:
        if stack_plan.geometry is None:
            continue
        try:
            assembled = assemble(stack_plan.stack, settings.missing_slices)
        except AssemblyError as error:
            stack_plan.error = str(error)
            continue
        file = folder / f"{stack_plan.stack.name}.nii.gz"
        sitk.WriteImage(assembled.image, str(file), True)
        written[stack_plan.stack.label] = file
    return written
