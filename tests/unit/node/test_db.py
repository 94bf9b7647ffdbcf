"""Database: migrations equal the models, SQLite pragmas, the helpers the stages share."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from node.db import (
    Base,
    Delivery,
    DeliveryState,
    Event,
    Job,
    JobState,
    Series,
    SeriesState,
    add_instance,
    add_received_instance,
    alembic_config,
    find_instance,
    init_db,
    list_series,
    make_session_factory,
    record_event,
    utcnow,
    write_session,
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'ctnode.db'}"


def _instance(session, sop: str, series: str = "1.2.3.2", add=add_instance, **extra):
    values = {
        "study_uid": "1.2.3.1",
        "series_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "modality": "CT",
        "instance_number": 1,
        "path": f"1.2.3.1/{series}/{sop}.dcm",
        "size_bytes": 10,
        "sender_ae": "STORESCU",
    }
    values.update(extra)
    return add(session, **values)  # add_instance returns the Instance


def test_migrations_at_head_equal_the_models(db_url: str) -> None:
    engine = init_db(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
        assert context.get_current_revision() == head
    engine.dispose()
    init_db(db_url).dispose()  # a second start leaves a database at head as it is


def test_sqlite_runs_in_wal_mode_with_crash_safe_commits(db_url: str) -> None:
    engine = init_db(db_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # FULL (2): every commit syncs the WAL (tests/integration/test_durability.py shows it).
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


# add_received_instance is the receiver's fast path; it must leave exactly the same rows.
@pytest.mark.parametrize("add", [add_instance, add_received_instance])
def test_add_instance_creates_updates_and_reopens_series(db_url: str, add) -> None:
    engine = init_db(db_url)
    sessions = make_session_factory(engine)
    with write_session(sessions) as session:
        _instance(session, "1.2.3.3.1", add=add)
        _instance(session, "1.2.3.3.2", add=add)
    with sessions() as session:
        (series,) = list_series(session)
        assert series.instance_count == 2 and series.state is SeriesState.RECEIVING
        assert series.first_received_at.tzinfo is UTC
        assert find_instance(session, "1.2.3.3.2").series_id == series.id
        assert find_instance(session, "1.2.3.3.2").received_at == series.last_received_at
    with write_session(sessions) as session:
        session.get(Series, series.id).state = SeriesState.ROUTED
    with write_session(sessions) as session:
        _instance(session, "1.2.3.3.3", add=add)  # a late instance
    with sessions() as session:
        series = session.get(Series, series.id)
        assert series.state is SeriesState.RECEIVING and series.instance_count == 3
        kinds = session.scalars(select(Event.kind).order_by(Event.id)).all()
        assert kinds == ["series.opened", "series.reopened"]
    with pytest.raises(IntegrityError), write_session(sessions) as session:
        _instance(session, "1.2.3.3.3", add=add)  # the unique constraint guards against races
    engine.dispose()


def test_job_delivery_and_event_links(db_url: str) -> None:
    engine = init_db(db_url)
    sessions = make_session_factory(engine)
    with write_session(sessions) as session:
        series_id = _instance(session, "1.2.3.3.1").series_id
        job = Job(series_id=series_id, pipeline="calcium")
        session.add(job)
        session.flush()
        delivery = Delivery(job_id=job.id, destination="pacs")
        session.add(delivery)
        session.flush()
        record_event(session, "job.state", "made by routing", state="queued", job_id=job.id)
        record_event(session, "delivery.state", "queued", state="pending", delivery_id=delivery.id)
    with sessions() as session:
        job = session.scalars(select(Job)).one()
        assert job.state is JobState.QUEUED and job.attempts == 0
        assert job.created_at <= utcnow() < job.created_at + timedelta(minutes=1)
        assert job.deliveries[0].state is DeliveryState.PENDING
        assert session.scalars(select(Event).where(Event.job_id == job.id)).one().state == "queued"
    engine.dispose()


def test_concurrent_writers_queue_instead_of_failing(db_url: str) -> None:
    engine = init_db(db_url)
    sessions = make_session_factory(engine)
    errors: list[BaseException] = []

    def receive(worker: int) -> None:
        try:
            for n in range(15):
                with write_session(sessions) as session:
                    _instance(session, f"1.2.3.4.{worker}.{n}", series=f"1.2.3.5.{n % 3}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=receive, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        assert sum(s.instance_count for s in list_series(session)) == 60
    engine.dispose()
