"""Instance files on disk: paths built only from validated UIDs, atomic and durable writes.

Layout: <spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm. A UID that is
not a valid DICOM UID never becomes part of a path, so a sender cannot steer a write outside
the spool (no '..', no '/', no NUL). A file is either absent or complete: it is written to a
temporary name in its final folder, flushed and fsync'd, renamed into place, and the folder is
fsync'd so the rename itself survives a power cut. Files are created 0600 and folders 0700
(patient data: readable by the node's user only), whatever the process umask.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

# PS3.5 9.1: components of digits separated by '.', no leading zero in a component of more
# than one digit, at most 64 characters in all.
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX_LENGTH = 64
TEMP_PREFIX = ".incoming-"
TEMP_SUFFIX = ".tmp"
INSTANCE_SUFFIX = ".dcm"
FOLDER_MODE = 0o700  # mkstemp already creates files 0600


class InvalidUIDError(ValueError):
    """A UID that does not follow PS3.5 9.1; the message names the attribute."""


def is_valid_uid(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= UID_MAX_LENGTH
        and UID_PATTERN.fullmatch(value) is not None
    )


def validate_uid(value: object, name: str) -> str:
    """The UID itself, or InvalidUIDError saying which attribute is wrong and why."""
    if value is None or value == "":
        raise InvalidUIDError(f"{name} is missing")
    if not isinstance(value, str):
        raise InvalidUIDError(f"{name} is not a single UID string")
    if len(value) > UID_MAX_LENGTH:
        raise InvalidUIDError(f"{name} is longer than {UID_MAX_LENGTH} characters")
    if not is_valid_uid(value):
        # The value itself is not repeated: a malformed field may hold anything, patient data
        # included, and this message goes to the log and the events table.
        raise InvalidUIDError(
            f"{name} is not a valid UID (digits and dots, no leading zeros in a component)"
        )
    return value


def instance_relative_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
    """The instance's path relative to the spool folder (what the database stores)."""
    parts = (
        validate_uid(study_uid, "StudyInstanceUID"),
        validate_uid(series_uid, "SeriesInstanceUID"),
        validate_uid(sop_instance_uid, "SOPInstanceUID") + INSTANCE_SUFFIX,
    )
    return Path(*parts)


def instance_path(spool_dir: Path, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
    return Path(spool_dir) / instance_relative_path(study_uid, series_uid, sop_instance_uid)


def series_folder(spool_dir: Path, study_uid: str, series_uid: str) -> Path:
    return (
        Path(spool_dir)
        / validate_uid(study_uid, "StudyInstanceUID")
        / validate_uid(series_uid, "SeriesInstanceUID")
    )


def fsync_directory(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file or subfolder) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders_durably(folder: Path) -> None:
    """mkdir -p, fsync'ing the parent of every folder it creates."""
    missing: list[Path] = []
    current = Path(folder)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # another association created it in the meantime
            continue
        fsync_directory(created.parent)


def write_durably(path: Path, chunks: Iterable[bytes]) -> int:
    """Write the file atomically and durably; return its size in bytes.

    Readers see either no file or the whole file, also after a crash or power cut. An
    existing file at `path` is replaced the same way.
    """
    path = Path(path)
    make_folders_durably(path.parent)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as stream:
            for chunk in chunks:
                stream.write(chunk)
                size += len(chunk)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return size


def remove_stale_temp_files(spool_dir: Path) -> int:
    """Delete temporary files left by a crash during a write; return how many.

    Run at start, before the listener accepts associations, so no write is in progress.
    """
    spool_dir = Path(spool_dir)
    if not spool_dir.is_dir():
        return 0
    removed = 0
    for temp in spool_dir.glob(f"*/*/{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed
