"""node.worker: a job is run by the pipeline the registry has under the job's name; a name this
version does not have fails the job with a clear, retryable reason (the worker carries on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import jobs
from node.config import load_settings
from node.db import (
    Event,
    Job,
    JobState,
    add_instance,
    init_db,
    make_session_factory,
    write_session,
)
from node.events import EventKind
from node.worker import Worker


@pytest.fixture
def node(tmp_path: Path):
    environ = {
        "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
        "CTNODE_STORAGE__DATABASE_URL": f"sqlite:///{tmp_path / 'ctnode.db'}",
    }
    settings = load_settings(environ=environ)
    engine = init_db(settings.storage.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()


def _queue_job(sessions, pipeline: str) -> int:
    with write_session(sessions) as session:
        instance = add_instance(
            session,
            study_uid="1.2.3",
            series_uid="1.2.3.4",
            sop_instance_uid="1.2.3.4.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="CT",
            instance_number=1,
            path="1.2.3/1.2.3.4/1.2.3.4.1.dcm",
            size_bytes=1,
            sender_ae="STORESCU",
        )
        job = Job(series_id=instance.series_id, pipeline=pipeline, state=JobState.QUEUED)
        session.add(job)
        session.flush()
        return job.id


def test_a_job_of_an_unknown_pipeline_fails_retryable_with_the_reason(node) -> None:
    settings, sessions = node
    job_id = _queue_job(sessions, "lungs")
    worker = Worker(settings, sessions)
    claimed = jobs.claim_next(sessions, worker.name, worker.claimant)
    assert claimed is not None and claimed.id == job_id
    assert worker.run_job(claimed) == JobState.FAILED
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.retryable is True
        assert (
            "no pipeline 'lungs' in this version of ctnode (it has: calcium, organs)" in job.error
        )
        kinds = [e.kind for e in session.query(Event).filter_by(job_id=job_id).order_by(Event.id)]
    assert kinds[-1] == EventKind.JOB_FAILED
