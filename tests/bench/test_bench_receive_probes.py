"""Benchmark: what a hostile but fair tester does to the open port, with the node's memory.

The probes of issue 28 items 1-3 and 11, against a real `ctnode serve` on loopback, each
printed with the node's VmRSS and VmHWM (/proc/<pid>/status) before and after:
a PDU header claiming 1 GiB on three connections held open; random bytes; a partial PDU and
silence (how long until the node closes the connection); twelve TCP connect+close probes and
then a real sender (echoscu); ten silent partial PDUs and then a real sender; a 512 MiB
instance (with the default size cap and with `max_instance_mb = 256`). Prints, never asserts.

Run against another checkout (e.g. main, for the "before" column) with
    python tests/bench/test_bench_receive_probes.py --repo /work/main --python /work/main/.venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

if __package__ in (None, ""):  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.nodeproc import DCMTK_ENV, free_port, site_config  # noqa: E402
from tests.tools import REPO, require_tool  # noqa: E402

pytestmark = pytest.mark.bench
NETWORK_TIMEOUT_S = 20  # as in the measurement
SILENCE_WAIT_S = 60  # a connection still open after this is reported as "> 60 s"


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Node:
    def __init__(self, folder: Path, repo: Path, python: str, **node_keys) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        sections = {
            "node": {"port": self.port, "network_timeout_s": NETWORK_TIMEOUT_S, **node_keys},
            "storage": {
                "spool_dir": str(folder / "spool"),
                "database_url": f"sqlite:///{folder / 'ctnode.db'}",
                "min_free_mb": 0,
            },
            "results": {"outbox_dir": str(folder / "outbox")},
            "worker": {"enabled": False},
        }
        self.sections = sections
        self.repo, self.python = repo, python

    def start(self, storage_extra: dict | None = None) -> Node:
        sections = {**self.sections}
        sections["storage"] = {**sections["storage"], **(storage_extra or {})}
        config = self.folder / "site.toml"
        config.write_text(site_config(sections, {}))
        log = self.folder / "serve.log"
        with log.open("w") as stream:
            self.process = subprocess.Popen(
                [self.python, "-m", "node.cli", "serve", "--config", str(config)],
                cwd=self.repo,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while "ctnode started" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text())
            time.sleep(0.1)
        return self

    def memory(self) -> tuple[float, float]:
        return memory_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echoscu(port: int) -> str:
    run = subprocess.run(
        ["echoscu", "-aec", "CTNODE", "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )
    if run.returncode == 0:
        return "accepted"
    text = run.stdout + run.stderr
    return "REJECTED (local limit exceeded)" if "Local Limit" in text else f"failed: {text[-80:]}"


def seconds_until_closed(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the peer closes `sock`, None when it is still open after limit_s (checked
    every 0.2 s: a close answers recv at once, the poll only bounds the overshoot of limit_s)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit_s:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # reset: closed as well
            return time.monotonic() - start
    return None


def partial_associate_rq() -> bytes:
    """The first bytes of an A-ASSOCIATE-RQ whose header announces 200 bytes."""
    return b"\x01\x00" + struct.pack(">L", 200) + b"\x00\x01\x00\x00CTNODE    "


def big_instance(path: Path, mib: int) -> Path:
    side = int((mib * 2**20 // 2) ** 0.5)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "PROBE"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.zeros((side, side), np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def storescu(port: int, path: Path) -> str:
    run = subprocess.run(
        ["storescu", "-v", "-aec", "CTNODE", "-to", "120", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=600,
    )
    responses = [line for line in (run.stdout + run.stderr).splitlines() if "Response" in line]
    return "; ".join(responses)[-160:] or f"exit {run.returncode}"


def run_probes(repo: Path, python: str, folder: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []

    def row(probe: str, result: str, node: Node, before: tuple[float, float]) -> None:
        rss, hwm = node.memory()
        figures = f"{result}; RSS {before[0]:.0f} -> {rss:.0f} MB, peak {hwm:.0f} MB"
        rows.append((probe, figures))
        print(f"{probe}: {figures}", flush=True)

    node = Node(folder / "node", repo, python).start()
    try:
        assert echoscu(node.port) == "accepted"
        before = node.memory()
        held = []
        for _ in range(3):
            sock = connect(node.port)
            sock.sendall(b"\x01\x00" + struct.pack(">L", 1 << 30))
            held.append(sock)
        time.sleep(2)
        still_open = sum(seconds_until_closed(sock, 0.6) is None for sock in held)
        row("1 GiB PDU header x3, held open", f"{still_open}/3 open after 3 s", node, before)
        for sock in held:
            sock.close()
        time.sleep(1)

        before = node.memory()
        rng = random.Random(28)
        for _ in range(200):
            with connect(node.port) as sock:
                sock.sendall(rng.randbytes(rng.randrange(1, 8192)))
        time.sleep(2)
        row("random bytes, 200 connections", "sent", node, before)

        before = node.memory()
        sock = connect(node.port)
        sock.sendall(partial_associate_rq())
        closed_after = seconds_until_closed(sock, SILENCE_WAIT_S)
        sock.close()
        shown = (
            f"closed after {closed_after:.1f} s" if closed_after else f"open > {SILENCE_WAIT_S} s"
        )
        row(f"partial PDU, silence (network_timeout_s={NETWORK_TIMEOUT_S})", shown, node, before)

        before = node.memory()
        for _ in range(12):
            connect(node.port).close()
        row("12 TCP connect+close probes, then echoscu", echoscu(node.port), node, before)

        before = node.memory()
        silent = [connect(node.port) for _ in range(10)]
        for sock in silent:
            sock.sendall(partial_associate_rq())
        time.sleep(0.5)
        row("10 silent partial PDUs, then echoscu", echoscu(node.port), node, before)
        for sock in silent:
            sock.close()
    finally:
        node.stop()

    instance = big_instance(folder / "big.dcm", 512)
    for label, storage in (
        ("default cap", {}),
        ("max_instance_mb = 256", {"max_instance_mb": 256}),
    ):
        if storage and "max_instance_mb" not in (Path(repo) / "config.toml").read_text():
            continue  # a checkout without the size cap
        node = Node(folder / f"node-{len(rows)}", repo, python).start(storage)
        try:
            before = node.memory()
            row(f"512 MiB instance, {label}", storescu(node.port, instance), node, before)
        finally:
            node.stop()
    return rows


def test_bench_receive_probes(tmp_path: Path) -> None:
    require_tool("echoscu", "dcmtk")
    run_probes(REPO, sys.executable, tmp_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--folder", type=Path, default=Path("/tmp") / f"probes-{os.getpid()}")
    arguments = parser.parse_args()
    for probe, figures in run_probes(arguments.repo, arguments.python, arguments.folder):
        print(f"| {probe} | {figures} |")
