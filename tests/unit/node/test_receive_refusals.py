"""C-STORE refusals: the Error Comment leads with the reason; pixel data and character sets are
checked before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from sqlalchemy import select

from node.config import load_settings
from node.db import Event, Instance, init_db, make_session_factory
from node.dicom_status import (
    ERROR_CANNOT_UNDERSTAND,
    ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    REFUSED_OUT_OF_RESOURCES,
    SUCCESS,
)
from node.receive import InstanceStore, error_comment

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"  # 64 chars


def test_error_comment_leads_with_the_reason() -> None:
    assert len(UID) == 64
    assert error_comment("spool has 3 MB free, below [storage] min_free_mb", UID) == (
        "spool has 3 MB free, below [storage] min_free_mb"
    )
    assert error_comment("bad thing", "1.2.3") == "bad thing; instance 1.2.3"
    long = error_comment("x" * 100, UID)
    assert long == "x" * 64
    # LO in the command set: printable ASCII, no backslash (it separates values)
    assert error_comment("set '\\ISO 2022 IR 87' ü", None) == "set '?ISO 2022 IR 87' ?"


@pytest.fixture
def store(tmp_path: Path):
    file = tmp_path / "site.toml"
    file.write_text(
        f'[storage]\nspool_dir = "{tmp_path / "spool"}"\n'
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\nmin_free_mb = 0\n'
    )
    settings = load_settings(file, environ={})
    engine = init_db(settings.storage.database_url)
    yield InstanceStore(settings, make_session_factory(engine))
    engine.dispose()


def _instance(rows: int = 4, columns: int = 4, pixels: bytes = bytes(32), **elements):
    dataset = Dataset()
    dataset.SOPClassUID = elements.pop("sop_class", CTImageStorage)
    dataset.SOPInstanceUID = UID
    dataset.StudyInstanceUID = "1.2.3.1"
    dataset.SeriesInstanceUID = "1.2.3.2"
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 1
    dataset.BitsAllocated = 16
    dataset.PixelData = pixels
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset, meta


def _refusals(store: InstanceStore) -> list[str]:
    with store.sessions() as session:
        return list(session.scalars(select(Event.message).where(Event.kind == "instance.rejected")))


@pytest.mark.parametrize(
    ("instance", "requested_class", "status", "comment"),
    [
        (
            _instance(256, 256, bytes(512 * 512 * 2)),
            CTImageStorage,
            ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "pixel data 524288 bytes, not 131072 for 256x256 at 16 bits",
        ),
        (
            _instance(SpecificCharacterSet="ISO_IR 999"),
            CTImageStorage,
            ERROR_CANNOT_UNDERSTAND,
            "Specific Character Set value 'ISO_IR 999' is not a defined term",
        ),
        (
            _instance(sop_class=MRImageStorage),
            CTImageStorage,
            ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "SOP Class UID differs from the request's (1.2.840.10008.5.1.4",
        ),
    ],
)
def test_refusals_store_nothing_and_say_why_first(
    store: InstanceStore, instance, requested_class: str, status: int, comment: str
) -> None:
    dataset, meta = instance
    outcome = store.store(dataset, b"x", meta, requested_class, UID, "PACS")
    assert outcome.status == status
    sent = outcome.as_dataset().ErrorComment
    assert sent.startswith(comment[:64]) and len(sent) <= 64
    [event] = _refusals(store)
    assert event.startswith(f"status 0x{status:04X}: instance {UID}: ") and comment in event
    assert not list(store.spool_dir.rglob("*.dcm"))
    with store.sessions() as session:
        assert session.scalars(select(Instance)).first() is None


def test_request_uid_mismatch_comment(store: InstanceStore) -> None:
    dataset, meta = _instance()
    outcome = store.store(dataset, b"x", meta, CTImageStorage, "1.2.3.4.6", "PACS")
    assert outcome.status == ERROR_CANNOT_UNDERSTAND
    assert outcome.as_dataset().ErrorComment == (
        "SOP Instance UID is not the request's (1.2.3.4.6)"
    )


def test_out_of_space_comment_names_the_cause(store: InstanceStore) -> None:
    store.min_free_bytes = 1 << 62
    dataset, meta = _instance()
    outcome = store.store(dataset, b"x", meta, CTImageStorage, UID, "PACS")
    assert outcome.status == REFUSED_OUT_OF_RESOURCES
    assert outcome.as_dataset().ErrorComment.startswith("spool has ")


def test_a_consistent_instance_is_stored(store: InstanceStore) -> None:
    dataset, meta = _instance(SpecificCharacterSet=["", "ISO 2022 IR 87"])
    assert store.store(dataset, b"x", meta, CTImageStorage, UID, "PACS").status == SUCCESS
