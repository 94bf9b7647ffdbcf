"""The same migrations and helpers on PostgreSQL (the shared database of a multi-host node).

Starts a throwaway PostgreSQL cluster on a free port (under 1 s); skips where the server
binaries or the psycopg driver are absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from sqlalchemy import func, select

from node.config import load_settings
from node.db import Base, Instance, init_db, list_series, make_session_factory
from node.receive import InstanceStore

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _as_postgres(*command: str) -> list[str]:
    # initdb refuses to run as root; the Debian package's postgres user owns the cluster.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="psycopg not installed (test extra)")
    if not PG_BIN or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL server binaries absent (apt package postgresql)")
    bin_dir = PG_BIN[-1]
    # Not under pytest's tmp_path: its folders are private to root, out of the server's reach.
    folder = Path(tempfile.mkdtemp(prefix="ctnode-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder}"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
    subprocess.run(
        _as_postgres(*pg_ctl, "-w", "-o", options, "start"), check=True, capture_output=True
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(*pg_ctl, "-m", "fast", "stop"), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_migrations_equal_the_models_on_postgresql(postgres_url: str) -> None:
    engine = init_db(postgres_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def _ct_instance(sop_uid: str) -> tuple[Dataset, FileMetaDataset]:
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = "1.2.9.1"
    dataset.SeriesInstanceUID = "1.2.9.2"
    dataset.Modality = "CT"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset, meta


def test_concurrent_receivers_on_a_new_series_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """Receivers racing to create one series and count its instances lose nothing."""
    settings = load_settings(
        environ={
            "CTNODE_STORAGE__DATABASE_URL": postgres_url,
            "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
            "CTNODE_STORAGE__MIN_FREE_MB": "0",
        }
    )
    engine = init_db(postgres_url)
    store = InstanceStore(settings, make_session_factory(engine))
    statuses: list[int] = []
    start = threading.Barrier(4)

    def receive(worker: int) -> None:
        start.wait()
        for n in range(8):
            dataset, meta = _ct_instance(f"1.2.9.3.{worker}.{n}")
            outcome = store.store(
                dataset, b"", meta, CTImageStorage, dataset.SOPInstanceUID, "PACS"
            )
            statuses.append(outcome.status)
        # the same instance from every worker: stored once, success for all
        dataset, meta = _ct_instance("1.2.9.3.99")
        statuses.append(
            store.store(dataset, b"", meta, CTImageStorage, "1.2.9.3.99", "PACS").status
        )

    threads = [threading.Thread(target=receive, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [0] * len(statuses) and len(statuses) == 36
    with make_session_factory(engine)() as session:
        (series,) = [s for s in list_series(session) if s.series_uid == "1.2.9.2"]
        assert series.instance_count == 33
        assert session.scalar(select(func.count(Instance.id))) == 33
    engine.dispose()


def test_job_claims_and_delivery_claims_skip_locked_rows_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four workers drain 24 queued jobs: each job is claimed exactly once (SELECT ... FOR
    UPDATE SKIP LOCKED); the sender's claim (a join locking only the delivery) runs too."""
    from node import jobs
    from node.db import Job, JobState, Series, SeriesState, utcnow, write_session
    from node.send import Sender

    engine = init_db(postgres_url)
    sessions = make_session_factory(engine)
    now = utcnow()
    with write_session(sessions) as session:
        series = Series(
            study_uid="1.2.9", series_uid="1.2.9.1", sender_ae="STORESCU",
            first_received_at=now, last_received_at=now, state=SeriesState.ROUTED,
        )  # fmt: skip
        session.add(series)
        session.flush()
        session.add_all(
            Job(series_id=series.id, pipeline="calcium", state=JobState.QUEUED, created_at=now)
            for _ in range(24)
        )
    claimed: list[int] = []
    lock = threading.Lock()

    def drain(worker: str) -> None:
        while (job := jobs.claim_next(sessions, worker)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=drain, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 24 and len(set(claimed)) == 24
    output = jobs.OutputFile("sr", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9.9", "1.2.9.8", "p", 1)
    owner = next(n for n in range(4) if jobs.heartbeat(sessions, claimed[0], f"w{n}"))
    jobs.finish(sessions, claimed[0], f"w{owner}", [output], ["pacs"])
    settings = load_settings(environ={"CTNODE_RESULTS__OUTBOX_DIR": str(tmp_path)})
    delivery = Sender(settings, sessions)._claim()
    assert delivery is not None and delivery.job_id == claimed[0] and delivery.attempt == 1
    assert Sender(settings, sessions)._claim() is None  # leased: not due again yet
    engine.dispose()
