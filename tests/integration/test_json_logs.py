"""[logging] format = "json": a real `ctnode serve` receives a series from DCMTK's storescu,
routes it, runs (and fails) its job, refuses an unknown sender, and stops; every line it
wrote to stdout and stderr is one JSON object with the documented fields, lines about a job
or series carry its id, and nothing of the patient in the sent files appears."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom

from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.synthetic_dicom import hu_volume, write_series
from tests.tools import require_tool

PATIENT_NAME = "Logprobe^Henrietta"
PATIENT_ID = "PID-LOG-58213"
BIRTH_DATE = "19430817"


def _series_with_a_patient(folder: Path) -> tuple[list[Path], str]:
    files = write_series(folder, hu_volume(20))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH_DATE
        ds.save_as(path, enforce_file_format=True)
    return files, str(pydicom.dcmread(files[0]).SeriesInstanceUID)


def _storescu(port: int, files: list[Path], calling_ae: str = "STORESCU") -> int:
    return subprocess.run(
        ["storescu", "-aet", calling_ae, "-aec", "CTNODE", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        env=DCMTK_ENV,
        capture_output=True,
        timeout=120,
        check=False,
    ).returncode


def test_json_log_lines_carry_fields_and_no_patient_data(tmp_path: Path) -> None:
    require_tool("storescu", "dcmtk")
    files, series_uid = _series_with_a_patient(tmp_path / "series")
    node = NodeProcess(
        tmp_path / "node",
        free_port(),
        sections={"logging": {"format": "json"}, "series": {"complete_after_s": 1}},
    )
    node.start()
    try:
        assert _storescu(node.port, files) == 0
        assert _storescu(node.port, files[:1], calling_ae="STRANGER") != 0  # not a peer
        wait_for(
            lambda: node.query("SELECT state FROM jobs WHERE state IN ('done', 'failed')"),
            120,
            "the routed series' job to end",
        )
    finally:
        assert node.stop() == 0

    lines = node.log_text().splitlines()
    assert len(lines) > 5
    records = []
    for line in lines:
        record = json.loads(line)  # every line, stdout and stderr alike
        assert {"time", "level", "logger", "message", "thread"} <= set(record), line
        records.append(record)
    messages = [r["message"] for r in records]
    assert any("ctnode started" in m for m in messages)
    assert any(r.get("series_uid") == series_uid for r in records), "no series_uid field"
    (job_id,) = node.query("SELECT id FROM jobs")[0]
    assert any(r.get("job_id") == job_id for r in records), "no job_id field"
    assert any(r.get("calling_ae") == "STRANGER" and r["level"] == "WARNING" for r in records), (
        "the refused association is not logged with its calling AE"
    )
    text = node.log_text()
    for patient_value in (PATIENT_NAME, "Logprobe", "Henrietta", PATIENT_ID, BIRTH_DATE):
        assert patient_value not in text
