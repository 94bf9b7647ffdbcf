"""Receiver decisions that need no network: the association allow-list and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from sqlalchemy import select

from node.config import load_settings
from node.db import Event, init_db, make_engine, make_session_factory
from node.dicom_status import (
    ERROR_CANNOT_UNDERSTAND,
    ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    REFUSED_OUT_OF_RESOURCES,
    SUCCESS,
)
from node.receive import (
    REJECT_BUSY,
    REJECT_CALLED_AE,
    REJECT_CALLING_AE,
    InstanceStore,
    association_refusal,
)


def _settings(tmp_path: Path, **environ: str):
    file = tmp_path / "site.toml"
    file.write_text(
        f'[storage]\nspool_dir = "{tmp_path / "spool"}"\n'
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\nmin_free_mb = 0\n'
        '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
    )
    return load_settings(file, environ=environ)


@pytest.mark.parametrize(
    ("calling", "called", "address", "refused"),
    [
        ("PACS", "CTNODE", "127.0.0.1", None),
        ("PACS  ", "CTNODE ", "::ffff:127.0.0.1", None),  # padding, IPv4-mapped address
        ("INTRUDER", "CTNODE", "127.0.0.1", REJECT_CALLING_AE),
        ("PACS", "CTNODE", "127.0.0.2", REJECT_CALLING_AE),  # right AE, wrong host
        ("PACS", "ANY-SCP", "127.0.0.1", REJECT_CALLED_AE),
    ],
)
def test_association_allow_list(tmp_path: Path, calling, called, address, refused) -> None:
    refusal = association_refusal(_settings(tmp_path), calling, called, address)
    assert (refusal and refusal.result_source_diagnostic) == refused
    if refusal is not None and calling.strip() == "INTRUDER":
        assert "'INTRUDER'" in refusal.reason


def test_association_limit_is_a_transient_refusal(tmp_path: Path) -> None:
    settings = _settings(tmp_path, CTNODE_NODE__MAX_ASSOCIATIONS="2")
    assert association_refusal(settings, "PACS", "CTNODE", "127.0.0.1", active=2) is None
    busy = association_refusal(settings, "PACS", "CTNODE", "127.0.0.1", active=3)
    assert busy.result_source_diagnostic == REJECT_BUSY and "max_associations=2" in busy.reason


def test_allow_list_switches(tmp_path: Path) -> None:
    anyone = _settings(tmp_path, CTNODE_NODE__ACCEPT_UNKNOWN_PEERS="true")
    assert association_refusal(anyone, "WHOEVER", "CTNODE", "10.1.2.3") is None
    no_host_check = _settings(tmp_path, CTNODE_NODE__CHECK_PEER_HOST="false")
    assert association_refusal(no_host_check, "PACS", "CTNODE", "10.1.2.3") is None


def _ct_instance(sop_class: str = CTImageStorage) -> tuple[Dataset, FileMetaDataset]:
    dataset = Dataset()
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = "1.2.3.4.5"
    dataset.StudyInstanceUID = "1.2.3.1"
    dataset.SeriesInstanceUID = "1.2.3.2"
    dataset.Modality = "CT"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset, meta


def test_store_refuses_mismatches_and_out_of_space_with_events(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    engine = init_db(settings.storage.database_url)
    store = InstanceStore(settings, make_session_factory(engine))

    dataset, meta = _ct_instance(MRImageStorage)
    outcome = store.store(dataset, b"", meta, CTImageStorage, "1.2.3.4.5", "PACS")
    assert outcome.status == ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS

    dataset, meta = _ct_instance()
    outcome = store.store(dataset, b"", meta, CTImageStorage, "1.2.3.4.6", "PACS")
    assert outcome.status == ERROR_CANNOT_UNDERSTAND

    store.min_free_bytes = 1 << 62  # more than any disk has
    outcome = store.store(dataset, b"", meta, CTImageStorage, "1.2.3.4.5", "PACS")
    assert outcome.status == REFUSED_OUT_OF_RESOURCES
    assert outcome.as_dataset().ErrorComment and len(outcome.as_dataset().ErrorComment) <= 64

    store.min_free_bytes = 0
    assert store.store(dataset, b"", meta, CTImageStorage, "1.2.3.4.5", "PACS").status == (SUCCESS)
    with make_session_factory(engine)() as session:
        events = session.scalars(select(Event).where(Event.kind == "instance.rejected")).all()
    assert [e.message[:11] for e in events] == ["status 0xA9", "status 0xC0", "status 0xA7"]
    assert all(e.ae_title == "PACS" for e in events)
    engine.dispose()


def test_database_failure_is_a_transient_refusal_not_a_crash(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    broken = make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated
    store = InstanceStore(settings, make_session_factory(broken))
    dataset, meta = _ct_instance()
    outcome = store.store(dataset, b"", meta, CTImageStorage, "1.2.3.4.5", "PACS")
    assert outcome.status == REFUSED_OUT_OF_RESOURCES and "database error" in outcome.reason
    broken.dispose()


def test_association_slots_are_counted_and_freed() -> None:
    from pynetdicom import AE
    from pynetdicom._globals import MODE_ACCEPTOR
    from pynetdicom.association import Association

    from node.receive import AssociationSlots

    slots = AssociationSlots(2)
    first, second, third = (Association(AE(), MODE_ACCEPTOR) for _ in range(3))
    assert slots.claim(first) and slots.claim(second)
    assert not slots.claim(third)  # all taken
    slots.release(first)
    slots.release(first)  # twice is harmless
    assert slots.claim(third) and len(slots) == 2


def test_an_association_whose_thread_ended_holds_no_slot() -> None:
    import threading

    from node.receive import AssociationSlots

    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    slots = AssociationSlots(1)
    assert slots.claim(ended)  # type: ignore[arg-type] - a Thread, as an Association is
    assert len(slots) == 0 and slots.claim(threading.Thread())  # type: ignore[arg-type]
