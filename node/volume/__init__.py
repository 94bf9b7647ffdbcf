"""CT series -> one CT volume: DICOM headers (headers), stacks (stacks), their geometry
(geometry), the stack to use (selection), HU pixels (pixels) and assembly (assembly), with the
entry points `read_ct` and `plan_folder` in read.py (docs/volume-assembly.md)."""

from node.volume.read import plan_folder, read_ct

__all__ = ["plan_folder", "read_ct"]
