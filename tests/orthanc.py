"""Orthanc as the PACS in tests and benchmarks: started on free ports with a generated
configuration (the node as a DICOM modality, HTTP on loopback only), driven over its REST API
with urllib, stopped at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.nodeproc import free_port

ORTHANC_AE = "ORTHANC"


def require_orthanc() -> str:
    path = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if path is None:
        pytest.skip("Orthanc not installed (apt package orthanc; tests/run.sh installs it)")
    return path


@dataclass
class Orthanc:
    folder: Path
    http_port: int
    dicom_port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, modalities: dict[str, tuple[str, str, int]], timeout_s: float = 30) -> Orthanc:
        executable = require_orthanc()
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "ctnode-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
            "Plugins": [],
            "DicomScuTimeout": 60,
            "StableAge": 60,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        self.process = subprocess.Popen(
            [executable, f"--logfile={self.folder / 'orthanc.log'}", str(path)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError) as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.folder / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start; see {log}") from error
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.read()

    def get(self, path: str) -> object:
        return json.loads(self.request("GET", path))

    def post(self, path: str, payload: object) -> object:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return json.loads(self.request("POST", path, body))

    def upload(self, files: list[Path]) -> list[dict]:
        """POST /instances for each file; Orthanc's answers (ID, ParentStudy, ...)."""
        return [self.post("/instances", path.read_bytes()) for path in files]

    def store(self, modality: str, resources: list[str]) -> dict:
        """C-STORE the resources (studies, series or instances) to a modality, synchronously."""
        return self.post(
            f"/modalities/{modality}/store", {"Resources": resources, "Synchronous": True}
        )

    def study_instances(self, study_id: str) -> list[dict]:
        """The study's instances with their series' modality and SOP class."""
        found = []
        for series in self.get(f"/studies/{study_id}/series"):
            for instance_id in series["Instances"]:
                tags = self.get(f"/instances/{instance_id}/simplified-tags")
                found.append(
                    {
                        "id": instance_id,
                        "series_id": series["ID"],
                        "modality": series["MainDicomTags"].get("Modality"),
                        "sop_class_uid": tags.get("SOPClassUID"),
                        "series_uid": tags.get("SeriesInstanceUID"),
                        "sop_uid": tags.get("SOPInstanceUID"),
                    }
                )
        return found

    def file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")


def start_orthanc(folder: Path, node_ae: str, node_port: int) -> Orthanc:
    return Orthanc(folder, free_port(), free_port()).start(
        {"NODE": (node_ae, "127.0.0.1", node_port)}
    )
