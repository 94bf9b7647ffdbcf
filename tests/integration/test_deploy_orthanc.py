"""deploy/orthanc as it ships, run by the real Orthanc: its Lua rule forwards a stable CT
series to the node and keeps the node's own results (Manufacturer "ctnode") away from it, and
the admin password comes from the environment. Only the container-specific values (ports,
folders, the receiver's address, the script's path) are replaced for this machine."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.orthanc import require_orthanc
from tests.synthetic_dicom import hu_volume, write_series
from tests.tools import REPO, require_tool

DEPLOY_ORTHANC = REPO / "deploy" / "orthanc"
PASSWORD = "deploy-test-password"
STABLE_AGE_S = 2


def _get(url: str, password: str | None) -> int:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError):
        return 0  # not listening (yet)


@pytest.fixture
def orthanc(tmp_path: Path):
    """Orthanc with deploy/orthanc/orthanc.json, forwarding to a node on this machine."""
    executable = require_orthanc()
    node_port, dicom_port, http_port = free_port(), free_port(), free_port()
    config = json.loads((DEPLOY_ORTHANC / "orthanc.json").read_text())
    ae_title, _receiver_host, _port = config["DicomModalities"]["ctnode"]
    config.update(
        StorageDirectory=str(tmp_path / "orthanc-db"),
        IndexDirectory=str(tmp_path / "orthanc-db"),
        DicomPort=dicom_port,
        HttpPort=http_port,
        DicomModalities={"ctnode": [ae_title, "127.0.0.1", node_port]},
        LuaScripts=[str(DEPLOY_ORTHANC / "route-ct.lua")],
        StableAge=STABLE_AGE_S,
    )
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = tmp_path / "orthanc.log"
    process = subprocess.Popen(
        [executable, f"--logfile={log}", str(path)],
        env={**os.environ, "ORTHANC_ADMIN_PASSWORD": PASSWORD, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_for(lambda: _get(url + "/system", None) in (200, 401), 60, "Orthanc to start")
        yield {"url": url, "dicom_port": dicom_port, "node_port": node_port, "ae": ae_title}
    finally:
        process.terminate()
        process.wait(30)


def test_orthanc_forwards_stable_ct_series_to_the_node(tmp_path: Path, orthanc: dict) -> None:
    require_tool("storescu", "dcmtk")
    # The REST API takes the password orthanc.json reads from the environment, and no other.
    assert _get(orthanc["url"] + "/system", None) == 401
    assert _get(orthanc["url"] + "/system", "wrong") == 401
    assert _get(orthanc["url"] + "/system", PASSWORD) == 200

    node = NodeProcess(
        tmp_path / "node",
        orthanc["node_port"],
        sections={
            "node": {"ae_title": orthanc["ae"]},
            "worker": {"enabled": False},
            "series": {"complete_after_s": 1},
        },
        lists={
            "peers": [
                {
                    "name": "orthanc",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": orthanc["dicom_port"],
                }
            ]
        },
    ).start()
    try:
        ct = write_series(tmp_path / "ct", hu_volume(18))
        own = write_series(tmp_path / "own", hu_volume(18, seed=1), manufacturer="ctnode")
        for files in (ct, own):
            sent = subprocess.run(
                ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc["dicom_port"])]
                + [str(f) for f in files],
                env=DCMTK_ENV,
                capture_output=True,
                timeout=120,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
        ct_uid = str(pydicom.dcmread(ct[0]).SeriesInstanceUID)
        own_uid = str(pydicom.dcmread(own[0]).SeriesInstanceUID)
        wait_for(
            lambda: (
                node.query(
                    "SELECT count(*) FROM instances JOIN series ON series.id = instances.series_id "
                    "WHERE series.series_uid = ?",
                    ct_uid,
                )[0][0]
                == len(ct)
            ),
            90,
            "Orthanc to forward the CT series to the node",
        )
        time.sleep(STABLE_AGE_S + 3)  # the other series was stable at the same time
        received = {uid for (uid,) in node.query("SELECT series_uid FROM series")}
        assert received == {ct_uid}, f"the node's own results were forwarded too: {own_uid}"
        assert "association from ORTHANC" in node.log_text()
    finally:
        node.stop()
