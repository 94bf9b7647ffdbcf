"""DICOM over TLS against DCMTK: storescu/echoscu +tls to the node's TLS listener, the node's
sender to storescp +tls, with a CA, server and client certificates made here by `openssl`.

The node's receiver runs in this process (a real listener on free ports, its own SQLite file
and spool); the DCMTK tools are real processes.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from node.config import DestinationSettings, Settings, load_settings
from node.db import Event, Instance, init_db, make_session_factory
from node.receive import Receiver
from node.send import OutboxItem, Outcome, store_results
from node.tls import client_context
from tests.nodeproc import DCMTK_ENV, free_port, site_config
from tests.synthetic_dicom import ct_slice
from tests.tools import require_tool


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _issue(folder: Path, name: str, ca: str, subject: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=folder)  # fmt: skip


def _ca(folder: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    return folder / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_tool("openssl", "openssl")
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca(folder, "test-ca")
    other_ca = _ca(folder, "other-ca")
    _issue(folder, "server", "test-ca", "/CN=ctnode",
           "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")  # fmt: skip
    _issue(folder, "client", "test-ca", "/CN=storescu",
           "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth\n")  # fmt: skip
    return Pki(ca, folder / "server.pem", folder / "server.key", folder / "client.pem",
               folder / "client.key", other_ca)  # fmt: skip


@dataclass
class TlsNode:
    settings: Settings
    receiver: Receiver
    sessions: object
    plain_port: int
    tls_port: int

    def count(self, model: type, *where: object) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where))


def _settings(folder: Path, pki: Pki, tls: dict, peers: list[dict]) -> Settings:
    config = folder / "site.toml"
    config.write_text(
        site_config(
            {
                "node": {"port": free_port(), "network_timeout_s": 5},
                "storage": {
                    "spool_dir": str(folder / "spool"),
                    "database_url": f"sqlite:///{folder / 'ctnode.db'}",
                    "min_free_mb": 1,
                },
                "tls": {
                    "enabled": True,
                    "port": free_port(),
                    "certificate": str(pki.server_cert),
                    "key": str(pki.server_key),
                    "ca": str(pki.ca),
                    **tls,
                },
            },
            {"peers": peers},
        )
    )
    return load_settings(config, environ={})


PEERS = [
    {"name": "storescu", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104, "tls": True},
    {"name": "echoscu", "ae_title": "ECHOSCU", "host": "127.0.0.1", "port": 104, "tls": True},
    {"name": "plain", "ae_title": "PLAINSCU", "host": "127.0.0.1", "port": 104},
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsNode]:
    require_tool("storescu", "dcmtk")
    folder = tmp_path_factory.mktemp("tls-node")
    settings = _settings(folder, pki, {"require_client_cert": True}, PEERS)
    sessions = make_session_factory(init_db(settings.storage.database_url))
    receiver = Receiver(settings, sessions)
    receiver.start()
    try:
        yield TlsNode(settings, receiver, sessions, receiver.address[1], receiver.tls_address[1])
    finally:
        receiver.stop(grace_s=2)


def _dcmtk(tool: str, *args: str | Path, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, env=DCMTK_ENV, timeout=timeout_s
    )


def _client_tls(pki: Pki) -> list[str | Path]:
    # +tls key certificate, +cf the CA the node's certificate must verify against.
    return ["+tls", pki.client_key, pki.client_cert, "+cf", pki.ca]


SERIES_UID = generate_uid()


def _slice_file(folder: Path, index: int = 0) -> Path:
    pixels = np.full((16, 16), -1000 + 10 * index, dtype=np.int16)
    ds = ct_slice(pixels, (0.0, 0.0, 2.5 * index), series_uid=SERIES_UID, instance=index + 1)
    path = folder / f"slice-{index}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_echoscu_and_storescu_over_tls_with_client_certificate(
    node: TlsNode, pki: Pki, tmp_path: Path
) -> None:
    echo = _dcmtk("echoscu", *_client_tls(pki), "-aec", "CTNODE", "127.0.0.1", node.tls_port)
    assert echo.returncode == 0, echo.stderr
    path = _slice_file(tmp_path)
    store = _dcmtk(
        "storescu", *_client_tls(pki), "-aec", "CTNODE", "127.0.0.1", node.tls_port, path
    )
    assert store.returncode == 0, store.stderr
    assert node.count(Instance) == 1
    spooled = next((node.settings.storage.spool_dir).glob("*/*/*.dcm"))
    assert spooled.read_bytes()[128:132] == b"DICM"


def test_tls_peer_is_refused_on_the_plain_port(node: TlsNode) -> None:
    echo = _dcmtk("echoscu", "-aec", "CTNODE", "127.0.0.1", node.plain_port)
    assert echo.returncode != 0
    assert "Association Rejected" in echo.stderr + echo.stdout
    with node.sessions() as session:
        reasons = session.scalars(
            select(Event.message).where(Event.kind == "association.rejected")
        ).all()
    assert any("must associate over TLS" in reason for reason in reasons)
    # A peer without tls = true still uses the plain port.
    plain = _dcmtk("echoscu", "-aet", "PLAINSCU", "-aec", "CTNODE", "127.0.0.1", node.plain_port)
    assert plain.returncode == 0, plain.stderr


def test_client_without_certificate_is_refused(node: TlsNode, pki: Pki, tmp_path: Path) -> None:
    # +tla: TLS without a client certificate.
    echo = _dcmtk("echoscu", "+tla", "+cf", pki.ca, "-aec", "CTNODE", "127.0.0.1", node.tls_port)
    assert echo.returncode != 0
    # A certificate from a CA the node does not trust is refused too.
    folder = pki.ca.parent
    _issue(folder, "stranger", "other-ca", "/CN=stranger", "extendedKeyUsage=clientAuth\n")
    stranger = _dcmtk("echoscu", "+tls", folder / "stranger.key", folder / "stranger.pem",
                      "+cf", pki.ca, "-aec", "CTNODE", "127.0.0.1", node.tls_port)  # fmt: skip
    assert stranger.returncode != 0
    before = node.count(Instance)
    path = _slice_file(tmp_path, 1)
    store = _dcmtk("storescu", "+tla", "+cf", pki.ca, "-aec", "CTNODE", "127.0.0.1",
                   node.tls_port, path)  # fmt: skip
    assert store.returncode != 0
    assert node.count(Instance) == before


def test_plain_and_silent_connections_to_the_tls_port_harm_nothing(node: TlsNode, pki: Pki) -> None:
    # A plain DICOM client on the TLS port: its A-ASSOCIATE-RQ is no TLS handshake.
    plain = _dcmtk("echoscu", "-aec", "CTNODE", "127.0.0.1", node.tls_port, timeout_s=30)
    assert plain.returncode != 0
    # Connections that send nothing: the handshake waits in their own threads, so the
    # listener still serves a real TLS client at once.
    silent = [socket.create_connection(("127.0.0.1", node.tls_port)) for _ in range(3)]
    try:
        start = time.monotonic()
        echo = _dcmtk("echoscu", *_client_tls(pki), "-aec", "CTNODE", "127.0.0.1", node.tls_port)
        assert echo.returncode == 0, echo.stderr
        assert time.monotonic() - start < 4  # well before the 5 s handshake timeout
    finally:
        for sock in silent:
            sock.close()
    assert node.receiver.tls_address is not None  # the listener is still up


@pytest.fixture
def storescp_tls(pki: Pki, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    require_tool("storescp", "dcmtk")
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    # -rc: the node must present a certificate (storescp's default, said explicitly); +cf:
    # signed by the test CA.
    process = subprocess.Popen(
        ["storescp", "+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca),
         "-rc", "-aet", "PACS", "-od", str(out), str(port)],
        env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield port, out
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_node_sends_to_storescp_over_tls(
    storescp_tls: tuple[int, Path], pki: Pki, tmp_path: Path
) -> None:
    port, out = storescp_tls
    settings = _settings(tmp_path, pki, {"certificate": str(pki.client_cert),
                                         "key": str(pki.client_key)}, [])  # fmt: skip
    destination = DestinationSettings("pacs", "PACS", "127.0.0.1", port, tls=True)
    path = _slice_file(tmp_path)
    item = OutboxItem("sc", "1.2.840.10008.5.1.4.1.1.2", path)
    attempt = store_results(destination, "CTNODE", [item], 10, client_context(settings.tls))
    assert attempt.outcome is Outcome.SENT, attempt.message
    assert len(list(out.iterdir())) == 1
    # Without a client certificate storescp (-rc) refuses it (in TLS 1.3 after the client's
    # side of the handshake, so the node sees an abort): transient, retried.
    anonymous = _settings(tmp_path, pki, {"enabled": False, "certificate": "", "key": "",
                                          "require_client_cert": False}, [])  # fmt: skip
    attempt = store_results(destination, "CTNODE", [item], 10, client_context(anonymous.tls))
    assert attempt.outcome is Outcome.TRANSIENT
    # A server certificate from a CA the node does not trust: refused by the node.
    untrusting = _settings(tmp_path, pki, {"ca": str(pki.other_ca),
                                           "certificate": str(pki.client_cert),
                                           "key": str(pki.client_key)}, [])  # fmt: skip
    attempt = store_results(destination, "CTNODE", [item], 10, client_context(untrusting.tls))
    assert attempt.outcome is Outcome.TRANSIENT
    assert "no connection over TLS" in attempt.message
    assert len(list(out.iterdir())) == 1


def test_listener_refuses_old_protocols_and_weak_ciphers(node: TlsNode, pki: Pki) -> None:
    def handshake(configure: object) -> str:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(pki.client_cert, pki.client_key)
        configure(context)
        with (
            socket.create_connection(("127.0.0.1", node.tls_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return f"{tls.version()} {tls.cipher()[0]}"

    def cbc_only(context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")

    def tls12_gcm(context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    # (A TLS 1.1 client cannot be tested here: this OpenSSL refuses TLS 1.1 on the client
    # side already; the listener's minimum_version is set regardless.)
    with pytest.raises(ssl.SSLError):
        handshake(cbc_only)
    assert handshake(tls12_gcm) == "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"
