"""What the node promises about its files, checked on a real process.

Durability: the receiver answers 0x0000 after its commit, and job and delivery states are what
senders and operators rely on, so every such commit must reach the disk before the node goes on
(SQLite synchronous=FULL: the WAL is fdatasync'd at each commit; NORMAL would sync it only at
checkpoints, and a power cut could roll back states already acted on). The tests run the node's
code under `strace -e trace=fsync,fdatasync -y`, which prints each sync with the file it
synced, and check the order of those syncs: a WAL sync inside every state change, and one
after every received instance's file before the next instance arrives (a sender sends the next
instance only after the answer to the previous one).

Permissions: after a real receive, every file and folder the node created (database, -wal,
-shm, spool, outbox) is readable by the node's user only (0600 / 0700).

PostgreSQL: the node's connections commit with synchronous_commit on.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from node.db import check_postgresql_durability, init_db, make_engine
from tests.integration.test_db_postgresql import postgres_url  # noqa: F401 - a fixture
from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.synthetic_dicom import write_series
from tests.tools import REPO, require_tool

SYNC = re.compile(r"\b(?:fsync|fdatasync)\(\d+<(?P<path>[^>]*)>")
INSTANCES = 12


def strace_command(trace: Path) -> list[str]:
    require_tool("strace", "strace")
    # --seccomp-bpf: only the traced calls stop the process, so the node runs at full speed.
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=fsync,fdatasync"] + [
        "-e",
        "signal=none",
        "-y",
        "-o",
        str(trace),
    ]


def synced_files(trace: Path) -> list[str]:
    """The files synced, in order (a call split by another thread counts at its start)."""
    return [m["path"] for m in map(SYNC.search, trace.read_text().splitlines()) if m]


def is_wal(path: str) -> bool:
    return path.endswith("ctnode.db-wal")


# Each step changes a job's or a delivery's state with the node's own functions, then fsyncs
# a marker file named after the step: the trace shows which syncs happened inside each step.
STATE_CHANGES = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from node import jobs
    from node.config import load_settings
    from node.db import Job, add_instance, init_db, make_session_factory, write_session
    from node.send import Attempt, Outcome, Sender

    folder = Path(sys.argv[1])
    sessions = make_session_factory(init_db(f"sqlite:///{folder / 'ctnode.db'}"))

    def marker(step):
        fd = os.open(folder / f"marker-{step}", os.O_CREAT | os.O_WRONLY, 0o600)
        os.fsync(fd)
        os.close(fd)

    marker("start")
    with write_session(sessions) as session:
        series_id = add_instance(
            session, study_uid="1.2", series_uid="1.2.3", sop_instance_uid="1.2.3.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="CT", instance_number=1, path="1.2/1.2.3/1.2.3.1.dcm", size_bytes=1,
            sender_ae="STORESCU",
        ).series_id
        session.add(Job(series_id=series_id, pipeline="calcium"))
    marker("job-queued")
    job = jobs.claim_next(sessions, "worker")
    marker("job-running")
    output = jobs.OutputFile("sr", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9.1", "1.2.9", "p", 1)
    jobs.finish(sessions, job.id, "worker", [output], ["pacs"])
    marker("job-sending")
    sender = Sender(load_settings(None), sessions)
    claimed = sender._claim()
    marker("delivery-claimed")
    sender._record(claimed, Attempt(Outcome.SENT, "stored", 0), 0.1)
    marker("delivery-sent")
    """
)


def test_every_job_and_delivery_state_change_syncs_the_wal(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    script = tmp_path / "state_changes.py"
    script.write_text(STATE_CHANGES)
    subprocess.run(
        [*strace_command(trace), sys.executable, str(script), str(tmp_path)],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    steps: dict[str, list[str]] = {}
    current = None
    for path in synced_files(trace):
        name = Path(path).name
        if name.startswith("marker-"):
            current = name.removeprefix("marker-")
            steps[current] = []
        elif current is not None:
            steps[current].append(path)
    # Each step ends at its own marker; the syncs before it belong to the step.
    order = ["start", "job-queued", "job-running", "job-sending", "delivery-claimed"]
    assert list(steps) == [*order, "delivery-sent"]
    for before, step in zip(order, order[1:] + ["delivery-sent"], strict=True):
        wal_syncs = [p for p in steps[before] if is_wal(p)]
        assert wal_syncs, f"no WAL sync while the state became {step}: {steps[before]}"
    final = init_db(f"sqlite:///{tmp_path / 'ctnode.db'}")
    with final.connect() as connection:
        assert connection.execute(text("SELECT state FROM jobs")).scalar_one() == "done"
        assert connection.execute(text("SELECT state FROM deliveries")).scalar_one() == "sent"
    final.dispose()


@pytest.fixture(scope="module")
def traced_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Path]]:
    """A receive-only `ctnode serve` under strace, after storescu sent it one series."""
    require_tool("storescu", "dcmtk")
    folder = tmp_path_factory.mktemp("node")
    trace = folder / "trace"
    node = NodeProcess(
        folder,
        free_port(),
        sections={"worker": {"enabled": False}, "series": {"complete_after_s": 3600}},
        lists={"peers": [{"name": "m", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 1}]},
        wrapper=strace_command(trace),
    ).start()
    volume = np.full((INSTANCES, 16, 16), 40, dtype=np.int16)
    files = write_series(tmp_path_factory.mktemp("series"), volume)
    sent = subprocess.run(
        ["storescu", "-aec", "CTNODE", "127.0.0.1", str(node.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=DCMTK_ENV,
        check=False,
    )
    try:
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for(
            lambda: node.query("SELECT count(*) FROM instances")[0][0] == INSTANCES,
            30,
            "the instances' rows",
        )
        yield node, trace
    finally:
        # Stop the node itself (strace's child): strace then ends with it.
        children = Path(f"/proc/{node.process.pid}/task/{node.process.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGTERM)
        node.process.wait(60)


def test_every_acknowledged_instance_was_committed_to_disk_first(traced_node) -> None:
    node, trace = traced_node
    synced = synced_files(trace)
    # The instance files: the temporary file is fsync'd before it is renamed into place.
    instance_syncs = [
        i for i, path in enumerate(synced) if Path(path).name.startswith(".incoming-")
    ]
    assert len(instance_syncs) == INSTANCES, synced
    # Between one instance's file and the next (which storescu sends only after the answer),
    # and after the last one, the commit synced the WAL.
    for start, end in zip(instance_syncs, [*instance_syncs[1:], len(synced)], strict=True):
        assert any(is_wal(path) for path in synced[start:end]), synced[start:end]


def test_the_node_creates_its_files_private(traced_node) -> None:
    node, _ = traced_node
    created = [node.database, Path(f"{node.database}-wal"), Path(f"{node.database}-shm")]
    spool, outbox = node.folder / "spool", node.folder / "outbox"
    created += [spool, outbox, *spool.rglob("*")]
    assert len([p for p in created if p.suffix == ".dcm"]) == INSTANCES
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path.relative_to(node.folder)} is {mode:o}"


def test_the_database_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Not only under `ctnode serve` (which sets umask 077): any process of the node, e.g. the
    CLI, creates the database 0600, and SQLite gives -wal and -shm the same mode."""
    previous = os.umask(0o022)
    try:
        engine = init_db(f"sqlite:///{tmp_path / 'db' / 'ctnode.db'}")
        with engine.connect() as connection:  # a reader keeps -wal and -shm in place
            connection.execute(text("SELECT count(*) FROM jobs"))
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "db").iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    assert modes == {"ctnode.db": 0o600, "ctnode.db-wal": 0o600, "ctnode.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o700


def test_postgresql_commits_are_durable(postgres_url: str) -> None:  # noqa: F811
    """PostgreSQL's own defaults: synchronous_commit on (a commit returns after its WAL is
    flushed) and fsync on. A database configured synchronous_commit=off gets it back on in
    the node's sessions; fsync=off (server-wide) is reported."""
    engine = init_db(postgres_url)
    assert check_postgresql_durability(engine) == []
    with engine.begin() as connection:
        assert connection.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert connection.execute(text("SHOW fsync")).scalar() == "on"
        connection.execute(text("ALTER DATABASE postgres SET synchronous_commit = off"))
    engine.dispose()
    try:
        engine = make_engine(postgres_url)
        with engine.connect() as connection:
            assert connection.execute(text("SHOW synchronous_commit")).scalar() == "on"
        engine.dispose()
        plain = create_engine(postgres_url)  # without the node's settings: off indeed
        with plain.connect() as connection:
            assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"
        plain.dispose()
    finally:
        with create_engine(postgres_url).begin() as connection:
            connection.execute(text("ALTER DATABASE postgres RESET synchronous_commit"))
