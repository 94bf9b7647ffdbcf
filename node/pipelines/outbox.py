"""The outbox: result objects written durably until every destination has them.

Layout: <[results] outbox_dir>/job-<id>/<kind>.dcm; results.path holds the part after
outbox_dir. Files are written like spooled instances (temporary file, fsync, rename, folder
fsync), so a result row never points at a partial file.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from node.jobs import OutputFile
from node.spool import write_durably


def job_folder(job_id: int) -> Path:
    return Path(f"job-{int(job_id)}")


def write_result(outbox_dir: Path, job_id: int, kind: str, dataset: Dataset) -> OutputFile:
    """Write one result object as a Part 10 file; the row that describes it."""
    buffer = BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    relative = job_folder(job_id) / f"{kind}.dcm"
    size = write_durably(Path(outbox_dir) / relative, [buffer.getvalue()])
    return OutputFile(
        kind=kind,
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        path=relative.as_posix(),
        size_bytes=size,
    )
