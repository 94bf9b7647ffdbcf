"""The node's whole flow with DCMTK peers: storescu as the sending PACS, storescp as the
results archive, `ctnode serve` in between (a subprocess with the calcium model).

The archive is down at first, so the first job's delivery fails after its tries; the tests then
start it and `ctnode jobs retry` sends the results. Around that: the job log with each stage's
time, a series with too few slices (a failed job with the reason, the node unharmed), a
localizer (ignored with the reason), late instances (the series re-opens and the new job
supersedes the old one), and the CLI's tables and JSON. The tests run in file order.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.tools import REPO, require_tool

SLICES = 48  # 2.5 mm apart: 117.5 mm, more than the 100 mm series selection asks for
MIN_SLICES = 30  # [calcium] min_slices of this node: a 20-slice series passes routing, then fails
COMPLETE_AFTER_S = 2.0


def make_phantom(folder: Path, seed: int, slices: int) -> list[Path]:
    subprocess.run(
        [sys.executable, "-m", "models.phantoms", "--out", str(folder), "--n", "1"]
        + ["--seed", str(seed), "--dicom", "--matrix", "128", "--protocol", "2.5/2.5"]
        + ["--slices", str(slices)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    files = sorted((folder / "case_0000" / "dicom").glob("*.dcm"))
    assert len(files) == slices
    return files


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("phantoms")
    return {
        "first": make_phantom(root / "first", 11, SLICES),
        "short": make_phantom(root / "short", 12, 20),
        "late": make_phantom(root / "late", 13, SLICES),
    }


@pytest.fixture(scope="module")
def archive_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, weights: Path, archive_port: int
) -> Iterator[NodeProcess]:
    require_tool("storescu", "dcmtk")
    running = NodeProcess(
        tmp_path_factory.mktemp("node"),
        free_port(),
        sections={
            "series": {"complete_after_s": COMPLETE_AFTER_S, "check_interval_s": 0.5},
            "send": {
                "max_attempts": 2,
                "backoff_initial_s": 0.5,
                "backoff_max_s": 1.0,
                "check_interval_s": 0.5,
                "timeout_s": 10,
            },
            "calcium": {"weights_dir": str(weights), "device": "cpu", "min_slices": MIN_SLICES},
        },
        lists={
            "peers": [{"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 1}],
            # The calcium route only: these tests follow one job per series (the organs job a
            # chest CT also gets is covered by test_orthanc.py).
            "routes": [
                {
                    "name": "chest-ct-calcium",
                    "pipeline": "calcium",
                    "description_exclude": ["*localizer*", "*scout*"],
                }
            ],
            "destinations": [
                {
                    "name": "archive",
                    "ae_title": "ARCHIVE",
                    "host": "127.0.0.1",
                    "port": archive_port,
                }
            ],
        },
    ).start()
    yield running
    assert running.stop() == 0, running.log_text()[-3000:]


def as_localizer(paths: list[Path], folder: Path) -> list[Path]:
    """Copies of `paths` in `folder` as a new series of LOCALIZER images (new UIDs)."""
    series = generate_uid()
    files = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(files[-1])
    return files


def storescu(node: NodeProcess, files: list[Path]) -> None:
    proc = subprocess.run(
        ["storescu", "-aec", "CTNODE", "127.0.0.1", str(node.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=DCMTK_ENV,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def jobs_of(node: NodeProcess, uid: str) -> list[tuple[int, str]]:
    return node.query(
        "SELECT jobs.id, jobs.state FROM jobs JOIN series ON series.id = jobs.series_id "
        "WHERE series.series_uid = ? ORDER BY jobs.id",
        uid,
    )


def final_job(node: NodeProcess, uid: str, timeout_s: float = 180) -> tuple[int, str]:
    def finished():
        rows = jobs_of(node, uid)
        return rows[-1] if rows and rows[-1][1] in ("done", "failed") else None

    return wait_for(finished, timeout_s, f"a finished job for series {uid}")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, archive_port: int) -> Iterator[Path]:
    """DCMTK's storescp as the results archive, started only when a test asks for it."""
    folder = tmp_path_factory.mktemp("archive")
    process = subprocess.Popen(
        ["storescp", "-aet", "ARCHIVE", "-od", str(folder), str(archive_port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield folder
    process.terminate()
    process.wait(10)


def test_archive_down_delivery_fails_and_the_log_shows_every_stage(
    node: NodeProcess, phantoms: dict[str, list[Path]]
) -> None:
    storescu(node, phantoms["first"])
    job_id, state = final_job(node, series_uid(phantoms["first"]))
    assert state == "failed"
    job = node.cli_json("jobs", "show", str(job_id))
    assert [s["state"] for s in job["stages"]] == ["queued", "running", "sending", "failed"]
    assert all(s["seconds"] is not None for s in job["stages"][:-1])
    stage_events = {e["kind"]: e["message"] for e in job["events"]}
    for stage in ("volume", "score", "results"):
        assert " s" in stage_events[f"job.stage.{stage}"], stage_events
    kinds = {o["kind"] for o in job["outputs"]}
    assert {"sr", "capture"} <= kinds
    (delivery,) = job["deliveries"]
    assert delivery["state"] == "failed" and delivery["attempts"] == 2
    assert "no connection" in delivery["last_error"]
    assert job["retryable"] is True and "ctnode jobs retry" in stage_events["job.failed"]
    table = node.cli("jobs", "show", str(job_id))
    assert "Time in each state" in table.stdout and "job.stage.score" in table.stdout


def test_jobs_retry_sends_once_the_archive_is_up(
    node: NodeProcess, phantoms: dict[str, list[Path]], archive: Path
) -> None:
    (job_id, _), *_ = jobs_of(node, series_uid(phantoms["first"]))
    retry = node.cli("jobs", "retry", str(job_id))
    assert retry.returncode == 0 and "re-queued" in retry.stdout, retry.stdout
    assert final_job(node, series_uid(phantoms["first"]), 60) == (job_id, "done")
    outputs = node.query("SELECT sop_instance_uid FROM results WHERE job_id = ?", job_id)
    received = {pydicom.dcmread(p).SOPInstanceUID for p in archive.iterdir() if p.is_file()}
    assert {uid for (uid,) in outputs} <= received
    again = node.cli("jobs", "retry", str(job_id))
    assert again.returncode == 1 and "only failed jobs" in again.stdout


def test_too_few_slices_fail_the_job_with_the_reason(
    node: NodeProcess, phantoms: dict[str, list[Path]]
) -> None:
    storescu(node, phantoms["short"])
    job_id, state = final_job(node, series_uid(phantoms["short"]))
    assert state == "failed"
    ((error, retryable),) = node.query("SELECT error, retryable FROM jobs WHERE id = ?", job_id)
    assert error == f"bad series: 20 instances, fewer than [calcium] min_slices={MIN_SLICES}"
    assert retryable == 0
    status = node.cli_json("status")
    assert any(j["id"] == job_id for j in status["failed_jobs"])
    assert node.process.poll() is None  # the node runs on and answers
    echo = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "CTNODE", "127.0.0.1", str(node.port)],
        capture_output=True,
        env=DCMTK_ENV,
        timeout=30,
        check=False,
    )
    assert echo.returncode == 0


def test_a_localizer_is_ignored_with_the_reason(
    node: NodeProcess, phantoms: dict[str, list[Path]], tmp_path: Path
) -> None:
    localizer = as_localizer(phantoms["short"], tmp_path)
    new_series = series_uid(localizer)
    storescu(node, localizer)

    def ignored():
        rows = node.query(
            "SELECT events.message FROM events JOIN series ON series.id = events.series_id "
            "WHERE series.series_uid = ? AND events.kind = 'series.ignored'",
            new_series,
        )
        return rows[0][0] if rows else None

    message = wait_for(ignored, 30, "the localizer to be ignored")
    assert "localizer" in message
    assert jobs_of(node, new_series) == []


def test_late_instances_reopen_the_series_and_supersede_its_job(
    node: NodeProcess, phantoms: dict[str, list[Path]]
) -> None:
    files = phantoms["late"]
    uid = series_uid(files)
    storescu(node, files[:42])
    first = wait_for(lambda: jobs_of(node, uid), 30, "the first job")[0][0]
    storescu(node, files[42:])
    wait_for(lambda: len(jobs_of(node, uid)) == 2, 30, "a second job")
    second, state = final_job(node, uid)
    assert second != first and state == "done"
    ((superseded, by),) = node.query("SELECT state, superseded_by FROM jobs WHERE id = ?", first)
    assert (superseded, by) == ("superseded", second)
    kinds = [k for (k,) in node.query("SELECT kind FROM events WHERE job_id = ?", first)]
    assert "job.superseded" in kinds
    # The job that ran on the whole series saw all of it.
    job = node.cli_json("jobs", "show", str(second))
    assert job["series"]["instances"] == SLICES
    assert f"{SLICES} instances" in job["events"][0]["message"]


def test_jobs_listing_filters_and_status_table(node: NodeProcess) -> None:
    everything = node.cli_json("jobs")
    failed = node.cli_json("jobs", "--status", "failed")
    assert failed and all(j["state"] == "failed" for j in failed)
    assert {j["id"] for j in failed} < {j["id"] for j in everything}
    assert node.cli_json("jobs", "--since", "1h") == everything
    assert node.cli_json("jobs", "--since", "2999-01-01T00:00:00") == []
    bad = node.cli("jobs", "--status", "lost")
    assert bad.returncode == 2
    table = node.cli("jobs").stdout
    assert "superseded" in table and "done" in table
    status = node.cli("status").stdout
    assert "Queues" in status and "Failed jobs" in status
