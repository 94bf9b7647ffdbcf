"""At start: register spool files that have no database row.

The receiver answers an instance with success once its file is durably in the spool (fsync of
the file and its folder) and its row is committed; SQLite runs with synchronous=FULL in WAL
mode (node/db.py), so that commit survives a power cut too. The spool file stays the record of
truth: this pass, run before the listener accepts associations, finds every instance file
without a row and inserts it. It covers a file written just before a crash that stopped its
row's commit (the sender got no answer and may send it again: the duplicate is answered
0x0000 and stored once), and a database whose last commits were lost anyway (a disk that
acknowledges writes it has only cached, a restore from backup). Each recovered instance gets an `instance.recovered` event; a file
that cannot be read stays where it is and is reported in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.db import Instance, add_instance, record_event, write_session
from node.events import EventKind
from node.receive import instance_row
from node.retention import PURGE_MARKER
from node.spool import INSTANCE_SUFFIX, InvalidUIDError, instance_relative_path, validate_uid

LOG = logging.getLogger("ctnode.spool")
UNKNOWN_SENDER = "UNKNOWN"  # a file written without Source AE Title in its meta header


def _recorded_paths(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Instance.path)))


def register_unrecorded_instances(spool_dir: Path, sessions: sessionmaker[Session]) -> int:
    """Insert a row for every spool instance file without one; return how many."""
    spool_dir = Path(spool_dir)
    if not spool_dir.is_dir():
        return 0
    recorded = _recorded_paths(sessions)
    recovered = 0
    for path in sorted(spool_dir.glob(f"*/*/*{INSTANCE_SUFFIX}")):
        relative = path.relative_to(spool_dir).as_posix()
        if relative in recorded or (path.parent / PURGE_MARKER).exists():
            continue  # a folder being purged (node.retention) is not brought back
        try:
            row = _row_from_file(path, spool_dir)
        except Exception as error:  # noqa: BLE001 - one unreadable file must not stop the start
            LOG.error("spool file %s has no database row and cannot be read (%s); left as is",
                      relative, type(error).__name__)  # fmt: skip
            continue
        with write_session(sessions) as session:
            instance = add_instance(session, **row)
            record_event(
                session,
                EventKind.INSTANCE_RECOVERED,
                f"instance {row['sop_instance_uid']} was in the spool without a database row "
                "(a crash or power cut after it was stored); registered at start",
                ae_title=row["sender_ae"],
                series_id=instance.series_id,
            )
        recovered += 1
    return recovered


def _row_from_file(path: Path, spool_dir: Path) -> dict:
    """The instance's row, read from its file's headers; the file must sit where its UIDs say."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    expected = instance_relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    validate_uid(ds.SOPClassUID, "SOPClassUID")
    if path.relative_to(spool_dir) != expected:
        raise InvalidUIDError(f"file is not at the path its UIDs give ({expected})")
    sender = str(ds.file_meta.get("SourceApplicationEntityTitle") or UNKNOWN_SENDER)
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    return instance_row(ds, transfer_syntax, expected, path.stat().st_size, sender)
