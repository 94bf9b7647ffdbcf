"""CT series -> one CT volume (SimpleITK image in HU): the entry point the rest of the node uses.

`plan_folder` finds the stacks in a folder (`plan_files`: in a list of files;
node.volume.stacks), works out each one's geometry (node.volume.geometry) and picks the one to
score (node.volume.selection), with a reason for every decision; `read_ct` assembles the chosen
stack (node.volume.assembly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from node.config import AssemblySettings
from node.volume.assembly import assemble
from node.volume.geometry import AssemblyError, StackGeometry, plan_geometry
from node.volume.selection import Candidate, SelectionPlan, select_for_calcium
from node.volume.stacks import Stack, StackScan, find_stacks, stacks_of_files

__all__ = ["AssemblyError", "StackPlan", "VolumePlan", "plan_files", "plan_folder", "read_ct"]


@dataclass
class StackPlan:
    stack: Stack
    geometry: StackGeometry | None  # None: the stack cannot be assembled
    error: str | None


@dataclass
class VolumePlan:
    scan: StackScan
    stacks: list[StackPlan]
    selection: SelectionPlan

    def plan_of(self, stack: Stack) -> StackPlan:
        return next(p for p in self.stacks if p.stack is stack)


def plan_folder(
    path: Path,
    settings: AssemblySettings | None = None,
    select: Callable[[list[Candidate]], SelectionPlan] = select_for_calcium,
) -> VolumePlan:
    """Stacks, their geometry, exclusions and the choice of `select` (by default the
    calcium-scoring choice; node.volume.selection.select_for_organs for organs) for a DICOM
    folder."""
    settings = settings or AssemblySettings()
    return _plan(find_stacks(path, allow_reformats=settings.allow_reformats), settings, select)


def plan_files(
    paths: Sequence[Path],
    settings: AssemblySettings | None = None,
    select: Callable[[list[Candidate]], SelectionPlan] = select_for_calcium,
) -> VolumePlan:
    """plan_folder for exactly the given files (a series' instances as recorded at receive)."""
    settings = settings or AssemblySettings()
    return _plan(stacks_of_files(paths, allow_reformats=settings.allow_reformats), settings, select)


def _plan(
    scan: StackScan,
    settings: AssemblySettings,
    select: Callable[[list[Candidate]], SelectionPlan],
) -> VolumePlan:
    plans, candidates = [], []
    for stack in scan.stacks:
        try:
            geometry = plan_geometry(stack, settings.missing_slices)
        except AssemblyError as error:
            plans.append(StackPlan(stack, None, str(error)))
            continue
        plans.append(StackPlan(stack, geometry, None))
        candidates.append(Candidate(stack, geometry.coverage_mm, len(geometry.frames)))
    selection = select(candidates)
    for plan in plans:
        if plan.error:
            selection.reasons[plan.stack.label] = f"cannot be assembled: {plan.error}"
    return VolumePlan(scan, plans, selection)


def read_ct(path: Path, settings: AssemblySettings | None = None) -> sitk.Image:
    """A CT volume (float32 HU) from a NIfTI/MHA file or a DICOM folder.

    For DICOM, the stack that series selection picks for calcium scoring; ValueError with
    every stack's reason when none qualifies. The slice thickness stays in the image's
    metadata as "0018|0050" (the score uses it)."""
    path = Path(path)
    if path.is_file() and not _is_dicom_file(path):
        return sitk.ReadImage(str(path), sitk.sitkFloat32)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    plan = plan_folder(path, settings)
    chosen = plan.selection.chosen
    if chosen is None:
        reasons = "; ".join(f"{label}: {why}" for label, why in plan.selection.reasons.items())
        raise ValueError(f"{path}: no CT stack suitable for calcium scoring ({reasons or 'none'})")
    assembled = assemble(chosen, (settings or AssemblySettings()).missing_slices)
    image = sitk.Cast(assembled.image, sitk.sitkFloat32)
    for key in assembled.image.GetMetaDataKeys():
        image.SetMetaData(key, assembled.image.GetMetaData(key))
    return image


def _is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as fp:
        head = fp.read(132)
    return head[128:132] == b"DICM"
