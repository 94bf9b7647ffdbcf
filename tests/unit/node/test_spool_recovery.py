"""Spool files without a database row (a power cut rolled the commit back) are registered at
start, so an acknowledged instance is never lost (node/spool_recovery.py)."""

from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from sqlalchemy import select

from node.db import Event, Instance, Series, init_db, make_session_factory
from node.spool import instance_path, write_durably
from node.spool_recovery import register_unrecorded_instances
from tests.synthetic_dicom import ct_slice


def _spool_file(spool: Path, ds, source_ae: str | None) -> Path:
    if source_ae:
        ds.file_meta.SourceApplicationEntityTitle = source_ae
    path = instance_path(spool, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    scratch = spool.parent / "scratch.dcm"
    ds.save_as(scratch, enforce_file_format=True)
    write_durably(path, [scratch.read_bytes()])
    return path


def test_files_without_rows_are_registered_once_with_an_event(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    engine = init_db(f"sqlite:///{tmp_path / 'node.db'}")
    sessions = make_session_factory(engine)
    hu = np.zeros((2, 8, 8), dtype=np.int16)
    slices = [
        ct_slice(hu[i], (0, 0, 3.0 * i), series_uid="1.2.3.4", instance=i + 1) for i in range(2)
    ]
    _spool_file(spool, slices[0], "SCANNER1")
    # An unreadable optional element does not stop an instance being stored, nor recovered.
    slices[1][0x00200013] = RawDataElement(Tag(0x00200013), "IS", 2, b"x ", 0, False, True)
    _spool_file(spool, slices[1], None)
    (spool / "1.2" / "3.4").mkdir(parents=True)
    (spool / "1.2" / "3.4" / "9.9.dcm").write_bytes(b"not dicom")  # unreadable: left alone

    assert register_unrecorded_instances(spool, sessions) == 2
    assert register_unrecorded_instances(spool, sessions) == 0  # idempotent
    with sessions() as session:
        instances = session.scalars(select(Instance).order_by(Instance.id)).all()
        assert [i.sop_instance_uid for i in instances] == sorted(
            s.SOPInstanceUID for s in slices
        )  # registered in path order
        by_uid = {i.sop_instance_uid: i for i in instances}
        first, second = (by_uid[s.SOPInstanceUID] for s in slices)
        assert (first.instance_number, first.sender_ae) == (1, "SCANNER1")
        assert (second.instance_number, second.sender_ae) == (None, "UNKNOWN")
        series = session.scalars(select(Series)).one()
        assert series.instance_count == 2
        kinds = session.scalars(select(Event.kind)).all()
        assert kinds.count("instance.recovered") == 2
    assert (spool / "1.2" / "3.4" / "9.9.dcm").exists()
    engine.dispose()
