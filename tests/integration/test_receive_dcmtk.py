"""`ctnode serve` as a real DICOM node, driven by DCMTK's echoscu and storescu.

One node runs for the whole module (a subprocess on a free port, its own spool and SQLite
file); the tests run in file order and the last one stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from node.scu import nodelay_handlers
from node.spool import instance_relative_path
from tests.tools import REPO, require_tool

PHANTOM_SLICES = 12
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Nagle off, see DESIGN.md conventions


@dataclass
class RunningNode:
    process: subprocess.Popen
    port: int
    config: Path
    spool: Path
    database: Path
    log: Path

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.database) as connection:
            return connection.execute(sql, args).fetchall()

    def log_text(self) -> str:
        return self.log.read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ctnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def _dcmtk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, env=DCMTK_ENV, check=False
    )


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("phantom")
    subprocess.run(
        [sys.executable, "-m", "models.phantoms", "--out", str(out), "--n", "1", "--seed", "3"]
        + ["--dicom", "--matrix", "128", "--slices", str(PHANTOM_SLICES)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    files = sorted((out / "case_0000" / "dicom").glob("*.dcm"))
    assert len(files) == PHANTOM_SLICES
    return files


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    require_tool("storescu", "dcmtk")
    folder = tmp_path_factory.mktemp("node")
    port = _free_port()
    config = folder / "site.toml"
    config.write_text(
        f"[node]\nport = {port}\n"
        f'[storage]\nspool_dir = "{folder / "spool"}"\n'
        f'database_url = "sqlite:///{folder / "ctnode.db"}"\nmin_free_mb = 0\n'
        + "".join(
            f'[[peers]]\nname = "{name}"\nae_title = "{ae}"\nhost = "127.0.0.1"\nport = {p}\n'
            for name, ae, p in (
                ("storescu", "STORESCU", 11113),
                ("echoscu", "ECHOSCU", 11113),
                ("self", "CTNODE", port),  # lets `ctnode echo self` call the node itself
            )
        )
    )
    log = folder / "serve.log"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve", "--config", str(config)],
            cwd=REPO,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    running = RunningNode(process, port, config, folder / "spool", folder / "ctnode.db", log)
    deadline = time.monotonic() + 60
    while "ctnode started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ctnode serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    yield running
    if process.poll() is None:
        process.kill()
        process.wait()


def test_echoscu_and_ctnode_echo(node: RunningNode) -> None:
    proc = _dcmtk("echoscu", "-aec", "CTNODE", "127.0.0.1", str(node.port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_name = _ctnode("echo", "self", "--config", str(node.config))
    assert by_name.returncode == 0 and "success" in by_name.stdout, by_name.stdout
    by_address = _ctnode("echo", f"CTNODE@127.0.0.1:{node.port}", "--config", str(node.config))
    assert by_address.returncode == 0 and "status 0x0000" in by_address.stdout


def test_scu_sockets_have_nagle_off(node: RunningNode) -> None:
    seen: list[int] = []

    def read_option(event: evt.Event) -> None:
        sock = event.assoc.dul.socket.socket
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    ae = AE(ae_title="CTNODE")
    ae.add_requested_context(Verification)
    handlers = [*nodelay_handlers(), (evt.EVT_CONN_OPEN, read_option)]
    association = ae.associate("127.0.0.1", node.port, ae_title="CTNODE", evt_handlers=handlers)
    assert association.is_established
    association.release()
    assert seen == [1]


def test_unknown_calling_ae_is_rejected(node: RunningNode) -> None:
    proc = _dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "CTNODE", "127.0.0.1", str(node.port))
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stdout + proc.stderr
    wrong_called = _dcmtk("echoscu", "-aec", "SOMEONE", "127.0.0.1", str(node.port))
    assert wrong_called.returncode != 0
    rows = node.query("SELECT ae_title, message FROM events WHERE kind = 'association.rejected'")
    assert any(ae == "INTRUDER" for ae, _ in rows)
    assert any("'SOMEONE'" in message for _, message in rows)
    assert "'INTRUDER'" in node.log_text()
    unknown = _ctnode("echo", "nowhere", "--config", str(node.config))
    assert unknown.returncode == 2 and "neither a configured" in unknown.stdout


def test_storescu_stores_every_instance_with_a_row_and_a_file(
    node: RunningNode, phantom: list[Path]
) -> None:
    proc = _dcmtk("storescu", "-aec", "CTNODE", "127.0.0.1", str(node.port), *map(str, phantom))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for original in phantom:
        sent = pydicom.dcmread(original)
        rows = node.query(
            "SELECT path, size_bytes, transfer_syntax_uid, sender_ae FROM instances "
            "WHERE sop_instance_uid = ?",
            sent.SOPInstanceUID,
        )
        assert len(rows) == 1
        path, size, transfer_syntax, sender = rows[0]
        stored_file = node.spool / path
        assert path == f"{sent.StudyInstanceUID}/{sent.SeriesInstanceUID}/{sent.SOPInstanceUID}.dcm"
        assert stored_file.stat().st_size == size and sender == "STORESCU"
        stored = pydicom.dcmread(stored_file)
        assert stored.file_meta.TransferSyntaxUID == transfer_syntax
        assert stored.SOPInstanceUID == sent.SOPInstanceUID
        assert stored.PixelData == sent.PixelData
    listing = json.loads(_ctnode("series", "--json", "--config", str(node.config)).stdout)
    (series,) = [s for s in listing if s["series_uid"] == sent.SeriesInstanceUID]
    assert series["instances"] == len(phantom) and series["sender_ae"] == "STORESCU"
    assert series["modality"] == "CT" and series["state"] == "receiving"
    table = _ctnode("series", "--config", str(node.config)).stdout
    assert "STORESCU" in table and sent.SeriesInstanceUID[-10:] in table


def test_resending_is_idempotent(node: RunningNode, phantom: list[Path]) -> None:
    before = node.query("SELECT COUNT(*) FROM instances")[0][0]
    proc = _dcmtk("storescu", "-aec", "CTNODE", "127.0.0.1", str(node.port), *map(str, phantom))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.query("SELECT COUNT(*) FROM instances")[0][0] == before
    assert node.query("SELECT SUM(instance_count) FROM series")[0][0] == before
    duplicates = node.query("SELECT COUNT(*) FROM events WHERE kind = 'instance.duplicate'")
    assert duplicates[0][0] == len(phantom)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # made invalid on purpose
@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("SeriesInstanceUID", "1.2.03.4", "SeriesInstanceUID is not a valid UID"),
        ("StudyInstanceUID", "../../escape", "StudyInstanceUID is not a valid UID"),
        ("StudyInstanceUID", None, "StudyInstanceUID is missing"),
    ],
)
def test_malformed_instance_gets_a_failure_status_and_an_event(
    node: RunningNode, phantom: list[Path], tmp_path: Path, attribute: str, value, reason: str
) -> None:
    dataset = pydicom.dcmread(phantom[0])
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if value is None:
        delattr(dataset, attribute)
    else:
        setattr(dataset, attribute, value)
    bad = tmp_path / "bad.dcm"
    dataset.save_as(bad, enforce_file_format=True)
    proc = _dcmtk("storescu", "-v", "-aec", "CTNODE", "127.0.0.1", str(node.port), str(bad))
    assert "Received Store Response (Error: CannotUnderstand)" in proc.stdout + proc.stderr
    events = node.query(
        "SELECT ae_title, message FROM events WHERE kind = 'instance.rejected' AND message LIKE ?",
        f"%{reason}%",
    )
    assert events and events[-1][0] == "STORESCU"
    assert node.query(
        "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", dataset.SOPInstanceUID
    ) == [(0,)]
    assert not list(node.spool.parent.glob("**/escape*"))
    assert not list(node.spool.rglob(f"{dataset.SOPInstanceUID}*"))


def test_a_spool_write_failure_is_refused_and_a_resend_is_stored(
    node: RunningNode, phantom: list[Path], tmp_path: Path
) -> None:
    """The file is written beside the database row (overlapping its fsync with the row): when
    the write fails, the sender gets Out of Resources and the row is rolled back."""
    dataset = pydicom.dcmread(phantom[0])
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "one.dcm"
    dataset.save_as(path, enforce_file_format=True)
    relative = instance_relative_path(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    )
    blocker = node.spool / relative.parent  # a file where the series folder has to go
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")
    count = "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?"

    proc = _dcmtk("storescu", "-v", "-aec", "CTNODE", "127.0.0.1", str(node.port), str(path))
    assert "OutOfResources" in proc.stdout + proc.stderr
    assert node.query(count, dataset.SOPInstanceUID) == [(0,)]
    events = node.query(
        "SELECT message FROM events WHERE kind = 'instance.rejected' AND message LIKE ?",
        f"%{dataset.SOPInstanceUID}: cannot write to the spool%",
    )
    assert len(events) == 1

    blocker.unlink()
    proc = _dcmtk("storescu", "-v", "-aec", "CTNODE", "127.0.0.1", str(node.port), str(path))
    assert "Received Store Response (Success)" in proc.stdout + proc.stderr
    assert node.query(count, dataset.SOPInstanceUID) == [(1,)]
    assert (node.spool / relative).read_bytes()[128:132] == b"DICM"


@pytest.mark.parametrize(
    ("compressor", "propose", "transfer_syntax"),
    [
        ("dcmcjpeg", "-xs", JPEGLosslessSV1),
        ("dcmcjpls", "-xt", JPEGLSLossless),
        ("dcmcrle", "-xr", RLELossless),
        (None, "-xd", DeflatedExplicitVRLittleEndian),  # storescu deflates on the fly
    ],
)
def test_compressed_instances_are_stored_as_sent_and_decode(
    node: RunningNode,
    phantom: list[Path],
    tmp_path: Path,
    compressor: str | None,
    propose: str,
    transfer_syntax: str,
) -> None:
    original = pydicom.dcmread(phantom[1])
    copy = original.copy()
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    plain, compressed = tmp_path / "plain.dcm", tmp_path / "compressed.dcm"
    copy.save_as(plain, enforce_file_format=True)
    if compressor is None:
        compressed = plain
    else:
        require_tool(compressor, "dcmtk")
        subprocess.run([compressor, str(plain), str(compressed)], check=True, timeout=60)
    proc = _dcmtk(
        "storescu", propose, "-aec", "CTNODE", "127.0.0.1", str(node.port), str(compressed)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ((path, stored_syntax),) = node.query(
        "SELECT path, transfer_syntax_uid FROM instances WHERE sop_instance_uid = ?",
        copy.SOPInstanceUID,
    )
    assert stored_syntax == transfer_syntax
    stored = pydicom.dcmread(node.spool / path)
    assert stored.file_meta.TransferSyntaxUID == transfer_syntax
    assert (stored.pixel_array == original.pixel_array).all()  # decoders installed, lossless


def test_no_patient_data_in_log_or_events(node: RunningNode, phantom: list[Path]) -> None:
    sent = pydicom.dcmread(phantom[0])
    patient_values = [
        str(sent.PatientName),
        sent.PatientName.family_name,
        str(sent.PatientID),
        str(sent.PatientBirthDate),
    ]
    log = node.log_text()
    assert "association from STORESCU" in log  # the log is not simply empty
    messages = " ".join(m for (m,) in node.query("SELECT message FROM events"))
    for value in patient_values:
        assert value and value not in log and value not in messages


def test_sigterm_stops_the_node_cleanly(node: RunningNode) -> None:
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(timeout=30) == 0
    assert "ctnode stopped" in node.log_text()
    proc = _dcmtk("echoscu", "-aec", "CTNODE", "127.0.0.1", str(node.port))
    assert proc.returncode != 0  # nothing listens any more
