"""A bounded protocol fuzzer against a real `ctnode serve` on loopback (issue 28 items 1-3, 11).

Mutated and truncated PDUs of every type (A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP,
A-ABORT, unknown types), bogus lengths up to 0xFFFFFFFF and random bytes, sent both before and
after an association is accepted; slow-loris connections (a partial PDU, then silence; a
request trickled in byte by byte); connect+close probes. Afterwards the node must answer
C-ECHO, store a valid series, and have grown by less than 100 MB (VmRSS and VmHWM from
/proc/<pid>/status).

Count- and time-limited (about a minute in all), seeded: a failure reproduces with the same
SEED. The tests run in file order against one node; the last one is the health check.
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.scu import nodelay_handlers
from tests.bench.test_bench_receive_probes import big_instance, memory_mb, seconds_until_closed
from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.synthetic_dicom import hu_volume, write_series
from tests.tools import require_tool

SEED = 2028
NETWORK_TIMEOUT_S = 2.0  # short, so silent connections end within the test
CLOSE_MARGIN_S = 3.0  # allowed beyond network_timeout_s on this shared 2-core machine
MAX_ASSOCIATIONS = 3
MAX_INSTANCE_MB = 1
MAX_RSS_GROWTH_MB = 100
PRE_ASSOCIATION_INPUTS, PRE_ASSOCIATION_BUDGET_S = 600, 25.0
IN_ASSOCIATION_INPUTS, IN_ASSOCIATION_BUDGET_S = 250, 20.0
BOGUS_LENGTHS = (0, 1, 3, 4, 5, 6, 200, 70_000, 262_145, 1_114_113, 1 << 30, 0xFFFFFFFF)
UNKNOWN_TYPES = (0x00, 0x08, 0x10, 0x7F, 0xFF)

inputs_tried = {"before association": 0, "in association": 0}
memory_at_start: dict[str, float] = {}  # the node's, after its warm-up


# --- PDUs, built by hand so they can be broken at will (PS3.8 9.3) ---------------------------


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(calling: str = "ECHOSCU", called: str = "CTNODE") -> bytes:
    context = _item(
        0x20,
        b"\x01\x00\x00\x00"
        + _item(0x30, Verification.encode())
        + _item(0x40, ImplicitVRLittleEndian.encode()),
    )
    user = _item(0x50, _item(0x51, struct.pack(">L", 16384)))
    body = (
        b"\x00\x01\x00\x00"
        + called.ljust(16).encode()
        + calling.ljust(16).encode()
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return pdu(0x01, body)


def echo_command() -> bytes:
    command = Dataset()
    command.AffectedSOPClassUID = Verification
    command.CommandField = 0x0030
    command.MessageID = 1
    command.CommandDataSetType = 0x0101
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, command)
    encoded = buffer.getvalue()
    group_length = struct.pack("<HHLL", 0x0000, 0x0000, 4, len(encoded))
    return group_length + encoded


def p_data(fragment: bytes, control: int = 0x03, context_id: int = 1) -> bytes:
    pdv = struct.pack(">L", len(fragment) + 2) + bytes([context_id, control]) + fragment
    return pdu(0x04, pdv)


TEMPLATES: dict[str, Callable[[], bytes]] = {
    "A-ASSOCIATE-RQ": associate_rq,
    "A-ASSOCIATE-AC": lambda: b"\x02" + associate_rq()[1:],
    "A-ASSOCIATE-RJ": lambda: pdu(0x03, b"\x00\x01\x01\x03"),
    "P-DATA-TF": lambda: p_data(echo_command()),
    "A-RELEASE-RQ": lambda: pdu(0x05, bytes(4)),
    "A-RELEASE-RP": lambda: pdu(0x06, bytes(4)),
    "A-ABORT": lambda: pdu(0x07, b"\x00\x00\x00\x00"),
}


def mutated(rng: random.Random) -> bytes:
    """One hostile input: a PDU of any type broken in one of several ways, or random bytes."""
    way = rng.choice(("flip", "truncate", "length", "type", "trailing", "random", "pdv"))
    if way == "random":
        return rng.randbytes(rng.randrange(1, 4096))
    data = bytearray(TEMPLATES[rng.choice(list(TEMPLATES))]())
    if way == "flip":
        for _ in range(rng.randrange(1, 8)):
            position = rng.randrange(6, len(data)) if len(data) > 6 else 0
            data[position] = rng.randrange(256)
    elif way == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif way == "length":
        data[2:6] = struct.pack(">L", rng.choice(BOGUS_LENGTHS))
    elif way == "type":
        data[0] = rng.choice(UNKNOWN_TYPES)
    elif way == "trailing":
        data += rng.randbytes(rng.randrange(1, 512))
    else:  # a P-DATA-TF whose PDV item length lies
        data = bytearray(p_data(echo_command()))
        data[6:10] = struct.pack(">L", rng.choice(BOGUS_LENGTHS))
    return bytes(data)


# --- talking to the node -----------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(5)
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    pdu_type, _, length = struct.unpack(">BBL", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return pdu_type, body


def send_and_hang_up(port: int, data: bytes, associate_first: bool) -> None:
    with connect(port) as sock:
        if associate_first:
            sock.sendall(associate_rq())
            pdu_type, _ = read_pdu(sock)
            if pdu_type != 0x02:
                return  # rejected (all slots busy for a moment): nothing to fuzz on
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the node already aborted and closed: fine
        closed = seconds_until_closed(sock, NETWORK_TIMEOUT_S + CLOSE_MARGIN_S)
        assert closed is not None, f"connection left open after {data[:16].hex()}..."


def echoscu(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aec", "CTNODE", "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )


def storescu(port: int, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-d", "--no-halt", "-aec", "CTNODE", "-to", "30", "127.0.0.1", str(port)]
        + [str(path) for path in paths],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    require_tool("storescu", "dcmtk")
    folder = tmp_path_factory.mktemp("fuzz-node")
    running = NodeProcess(
        folder,
        free_port(),
        sections={
            "node": {
                "network_timeout_s": NETWORK_TIMEOUT_S,
                "max_associations": MAX_ASSOCIATIONS,
            },
            "storage": {"max_instance_mb": MAX_INSTANCE_MB},
            "worker": {"enabled": False},  # no jobs: the node's memory is the receiver's
        },
    ).start()
    # Warm up what receiving loads once (pydicom's dictionaries, the database), so growth
    # measured from here is what the fuzzing left behind.
    warm_up = write_series(folder / "warm-up", hu_volume(2), series_uid=None)
    assert storescu(running.port, *warm_up).returncode == 0
    memory_at_start["rss"], memory_at_start["hwm"] = memory_mb(running.process.pid)
    yield running
    running.stop()
    print(f"\nfuzz inputs tried: {inputs_tried} (seed {SEED})")


def _fuzz(node: NodeProcess, count: int, budget_s: float, associate: bool, workers: int) -> int:
    rng = random.Random(SEED + associate)
    inputs = [mutated(rng) for _ in range(count)]
    deadline = time.monotonic() + budget_s
    tried = 0
    lock = threading.Lock()

    def one(data: bytes) -> None:
        nonlocal tried
        if time.monotonic() > deadline:
            return
        send_and_hang_up(node.port, data, associate)
        with lock:
            tried += 1

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one, data) for data in inputs]:
            future.result()
    assert node.process.poll() is None, node.log_text()[-3000:]
    return tried


def test_hostile_input_before_an_association(node: NodeProcess) -> None:
    tried = _fuzz(node, PRE_ASSOCIATION_INPUTS, PRE_ASSOCIATION_BUDGET_S, False, workers=6)
    inputs_tried["before association"] = tried
    print(f"\n{tried} inputs before an association")
    assert tried >= 100


def test_hostile_input_inside_an_association(node: NodeProcess) -> None:
    tried = _fuzz(node, IN_ASSOCIATION_INPUTS, IN_ASSOCIATION_BUDGET_S, True, workers=2)
    inputs_tried["in association"] = tried
    print(f"\n{tried} inputs inside an association")
    assert tried >= 50


def test_a_header_claiming_a_huge_pdu_is_aborted_at_once(node: NodeProcess) -> None:
    for length in (1 << 30, 0xFFFFFFFF):
        with connect(node.port) as sock:
            sock.sendall(pdu(0x01, b"", length))  # and nothing more: no EOF to help the node
            reply_type, _ = read_pdu(sock)
            assert reply_type == 0x07  # A-ABORT, without waiting for the body
            assert seconds_until_closed(sock, 2.0) is not None


def _held_association(port: int):
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    association = ae.associate(
        "127.0.0.1", port, ae_title="CTNODE", evt_handlers=nodelay_handlers()
    )
    return association


def test_silent_and_trickling_connections_are_closed_and_hold_no_slot(node: NodeProcess) -> None:
    partial_rq = associate_rq()[:40]
    silent = [connect(node.port) for _ in range(MAX_ASSOCIATIONS + 7)]  # 10, no slot each
    for index, sock in enumerate(silent):
        sock.sendall(partial_rq[: 3 + index])  # part of a header, or header and part of a body
    # Associated peers that stop in the middle of a P-DATA-TF: they do hold a slot each.
    associated = []
    for _ in range(MAX_ASSOCIATIONS - 1):
        sock = connect(node.port)
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02
        sock.sendall(p_data(echo_command())[:20])
        associated.append(sock)
    trickle = connect(node.port)
    stop_trickle = threading.Event()

    def trickle_bytes() -> None:  # never silent for long, never finishing the request
        for byte in associate_rq():  # the first at once, maybe before the node's DUL runs
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                return
            if stop_trickle.wait(0.4):
                return

    started = time.monotonic()
    threading.Thread(target=trickle_bytes, daemon=True).start()
    try:
        # The silent connections hold no slot: the one free slot takes a real sender.
        echo = echoscu(node.port)
        assert echo.returncode == 0, echo.stdout + echo.stderr
        limit = NETWORK_TIMEOUT_S + CLOSE_MARGIN_S
        for sock in [*silent, *associated, trickle]:
            left = limit - (time.monotonic() - started)
            closed = seconds_until_closed(sock, max(left, 0.1))
            assert closed is not None, f"port {sock.getsockname()[1]} still open"
        elapsed = time.monotonic() - started
        print(f"\n{len(silent) + len(associated) + 1} silent connections closed in {elapsed:.1f} s")
        assert elapsed >= NETWORK_TIMEOUT_S * 0.9  # closed by the timeout, not at once
    finally:
        stop_trickle.set()
        for sock in [*silent, *associated, trickle]:
            sock.close()
    echo = echoscu(node.port)  # every slot free again
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_probes_cost_no_slot_and_slots_free_when_connections_close(node: NodeProcess) -> None:
    for _ in range(50):
        connect(node.port).close()
    held = [_held_association(node.port) for _ in range(MAX_ASSOCIATIONS)]
    try:
        assert all(association.is_established for association in held)  # every slot usable
        busy = echoscu(node.port)
        assert busy.returncode != 0 and "Rejected Transient" in busy.stdout + busy.stderr
    finally:
        for association in held:
            association.release()
    echo = echoscu(node.port)  # slots free as soon as the connections closed
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_an_instance_over_the_size_cap_is_refused_and_the_association_goes_on(
    node: NodeProcess, tmp_path: Path
) -> None:
    oversize = big_instance(tmp_path / "oversize.dcm", 2 * MAX_INSTANCE_MB)
    small = write_series(tmp_path / "small", hu_volume(1))
    run = storescu(node.port, oversize, *small)
    text = run.stdout + run.stderr
    assert "0xa701" in text.lower() and "ErrorComment" in text, text
    assert "0x0000: Success" in text, text  # the next instance on the same association
    rejected = node.query(
        "SELECT message FROM events WHERE kind = 'instance.rejected' AND message LIKE '%max_instance_mb%'"
    )
    assert rejected, "no instance.rejected event"
    stored = {row[0] for row in node.query("SELECT sop_instance_uid FROM instances")}
    assert pydicom.dcmread(small[0]).SOPInstanceUID in stored  # the association went on
    assert pydicom.dcmread(oversize, stop_before_pixels=True).SOPInstanceUID not in stored


def test_afterwards_the_node_echoes_stores_and_did_not_grow(node: NodeProcess, tmp_path) -> None:
    echo = echoscu(node.port)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    series = write_series(tmp_path / "series", hu_volume(8, seed=5))
    run = storescu(node.port, *series)
    assert run.returncode == 0, run.stdout + run.stderr
    wait_for(
        lambda: node.query("SELECT COUNT(*) FROM instances")[0][0] >= 8 + 2 + 1,
        10,
        "the valid series in the database",
    )
    rss, hwm = memory_mb(node.process.pid)
    base_rss, base_hwm = memory_at_start["rss"], memory_at_start["hwm"]
    print(f"\nnode memory: RSS {base_rss:.0f} -> {rss:.0f} MB, peak {base_hwm:.0f} -> {hwm:.0f} MB")
    assert rss - base_rss < MAX_RSS_GROWTH_MB
    assert hwm - base_hwm < MAX_RSS_GROWTH_MB
    # Every bad input ended in an orderly abort, none in a thread killed by an exception.
    assert "Exception in thread" not in node.log_text()
