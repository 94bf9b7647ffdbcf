"""The HTTP port of a real `ctnode serve` during a real run: /metrics scraped and parsed,
/healthz, and the status page in headless chromium (selenium), all on one node run.

The run: storescu sends a phantom chest CT (one calcium job; its results go to a storescp
archive, which takes them, and to an offline destination, which fails), a localizer (ignored),
one instance without a Study Instance UID (refused 0xC000) and an echo from an unknown AE title
(association rejected). The node requires a token on its HTTP port, so the scrape uses the
Authorization header and the browser the ?token= link. The tests run in file order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from tests.integration.test_flow_dcmtk import as_localizer, make_phantom, series_uid, storescu
from tests.nodeproc import DCMTK_ENV, NodeProcess, free_port, wait_for
from tests.tools import require_tool

SLICES = 48
LOCALIZER_SLICES = 3
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PIPELINE_STEPS = ("volume", "score", "results")
JOB_STATES = ("queued", "running", "sending")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    require_tool("storescp", "dcmtk")
    folder, port = tmp_path_factory.mktemp("archive"), free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "ARCHIVE", "-od", str(folder), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield port, folder
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, weights: Path, archive: tuple[int, Path]
) -> Iterator[NodeProcess]:
    require_tool("storescu", "dcmtk")
    running = NodeProcess(
        tmp_path_factory.mktemp("node"),
        free_port(),
        sections={
            "series": {"complete_after_s": 1.5, "check_interval_s": 0.5},
            "send": {"max_attempts": 1, "check_interval_s": 0.5, "timeout_s": 10},
            "calcium": {"weights_dir": str(weights), "device": "cpu", "min_slices": 30},
            "http": {"enabled": True, "port": free_port(), "token": TOKEN},
        },
        lists={
            "peers": [{"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 1}],
            "routes": [
                {
                    "name": "chest-ct-calcium",
                    "pipeline": "calcium",
                    "description_exclude": ["*localizer*"],
                }
            ],
            "destinations": [
                {"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive[0]},
                {
                    "name": "offline",
                    "ae_title": "OFFLINE",
                    "host": "127.0.0.1",
                    "port": free_port(),
                },
            ],
        },
    ).start()
    yield running
    assert running.stop() == 0, running.log_text()[-3000:]
    # The health checks left no half-open association behind (see node/http/health.py).
    assert "aborting the association" not in running.log_text()


def http_port(node: NodeProcess) -> int:
    return node.sections["http"]["port"]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(node: NodeProcess) -> dict[tuple[str, frozenset], float]:
    status, body = get(http_port(node), "/metrics", AUTH)
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def refuse_one_instance(node: NodeProcess) -> None:
    """C-STORE of an instance without a Study Instance UID: refused with 0xC000."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", node.port, ae_title="CTNODE")
    assert association.is_established
    dataset = pydicom.Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    status = association.send_c_store(dataset)
    association.release()
    assert status.Status == 0xC000


@pytest.fixture(scope="module")
def run(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int | str]:
    """Everything the node was sent, once its job and the localizer are finished."""
    root = tmp_path_factory.mktemp("series")
    chest = make_phantom(root / "chest", 21, SLICES)
    storescu(node, chest)
    storescu(node, as_localizer(chest[:LOCALIZER_SLICES], root))
    refuse_one_instance(node)
    echo = subprocess.run(
        ["echoscu", "-aet", "STRANGER", "-aec", "CTNODE", "127.0.0.1", str(node.port)],
        capture_output=True,
        env=DCMTK_ENV,
        timeout=30,
        check=False,
    )
    assert echo.returncode != 0  # rejected: not a configured peer
    uid = series_uid(chest)

    def finished():
        rows = node.query(
            "SELECT jobs.id, jobs.state FROM jobs JOIN series ON series.id = jobs.series_id "
            "WHERE series.series_uid = ? AND jobs.state IN ('done', 'failed')",
            uid,
        )
        return rows[0] if rows else None

    job_id, state = wait_for(finished, 240, "the chest CT's job to finish")
    wait_for(
        lambda: node.query("SELECT 1 FROM series WHERE state = 'ignored'"), 30, "the localizer"
    )
    return {"job_id": job_id, "state": state, "series_uid": uid}


def test_metrics_reflect_the_run(node: NodeProcess, run: dict) -> None:
    # The archive took the results, the offline destination did not: the job failed on it.
    assert run["state"] == "failed"
    metrics = scrape(node)

    def value(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert value("ctnode_database_up") == 1
    assert value("ctnode_instances_received_total") == SLICES + LOCALIZER_SLICES
    assert value("ctnode_instances_refused_total", status="0xC000", reason="cannot_understand") == 1
    assert value("ctnode_associations_rejected_total") == 1
    assert value("ctnode_series_completed_total") == 2
    assert value("ctnode_series_ignored_total") == 1
    assert value("ctnode_series", state="routed") == 1
    assert value("ctnode_series", state="ignored") == 1
    assert value("ctnode_jobs", pipeline="calcium", state="failed") == 1
    assert value("ctnode_job_queue_depth") == 0
    assert value("ctnode_oldest_queued_job_age_seconds") == 0
    assert value("ctnode_deliveries", state="sent") == 1
    assert value("ctnode_deliveries", state="failed") == 1
    assert value("ctnode_deliveries_failed_total") == 1
    assert value("ctnode_spool_free_bytes") > 0
    assert value("ctnode_spool_min_free_bytes") == 0

    # One observation per stage of the one job, matching the job log that `jobs show` reads.
    job = node.cli_json("jobs", "show", str(run["job_id"]))
    for stage in (*JOB_STATES, *PIPELINE_STEPS):
        labels = {"pipeline": "calcium", "stage": stage}
        assert value("ctnode_job_stage_seconds_count", **labels) == 1, stage
        assert value("ctnode_job_stage_seconds_bucket", le="+Inf", **labels) == 1
    for stage in job["stages"][:-1]:  # the last, "failed", is final: no duration
        observed = value("ctnode_job_stage_seconds_sum", pipeline="calcium", stage=stage["state"])
        assert observed == pytest.approx(stage["seconds"], abs=0.01)
    # A second scrape counts nothing twice (the stage histogram is updated incrementally).
    again = scrape(node)
    changing = ("ctnode_spool_free_bytes",)
    assert {
        key: again[key]
        for key in metrics
        if key[0].startswith("ctnode_") and key[0] not in changing
    } == {
        key: v
        for key, v in metrics.items()
        if key[0].startswith("ctnode_") and key[0] not in changing
    }


def test_healthz_is_ok_while_everything_runs(node: NodeProcess, run: dict) -> None:
    status, body = get(http_port(node), "/healthz", AUTH)
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok", report
    assert set(report["checks"]) == {"listener", "database", "disk", "model"}
    assert all(check["ok"] for check in report["checks"].values())
    assert get(http_port(node), "/healthz")[0] == 401  # the token is required


def test_healthz_is_503_when_the_spool_is_below_its_watermark(
    tmp_path: Path, node: NodeProcess
) -> None:
    full = NodeProcess(
        tmp_path,
        free_port(),
        sections={
            "storage": {"min_free_mb": 2**40},  # an exabyte: above any disk's free space
            "worker": {"enabled": False},
            "http": {"enabled": True, "port": free_port()},
        },
    ).start()
    try:
        status, body = get(http_port(full), "/healthz")
    finally:
        assert full.stop() == 0
    report = json.loads(body)
    assert status == 503 and report["status"] == "unhealthy"
    assert report["checks"]["disk"]["ok"] is False
    assert "below min_free_mb" in report["checks"]["disk"]["detail"]
    assert report["checks"]["listener"]["ok"] and report["checks"]["database"]["ok"]
    assert "model" not in report["checks"]  # a receive-only process has no model to load


def chromium_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_tool("chromedriver", "chromium-driver")
    binary = shutil.which("chromium") or require_tool("chromium", "chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2600"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def test_status_page_in_a_headless_browser(node: NodeProcess, run: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = chromium_driver()
    base = f"http://127.0.0.1:{http_port(node)}"
    try:
        driver.get(base + "/")
        assert "token is required" in driver.page_source
        driver.get(f"{base}/?token={TOKEN}")
        assert driver.current_url == base + "/"  # the token left the address bar
        job_link = driver.find_element(By.LINK_TEXT, f"#{run['job_id']}")
        row = job_link.find_element(By.XPATH, "./ancestor::tr").text
        assert "calcium" in row and "failed" in row and run["series_uid"] in row
        series_table = driver.find_element(By.ID, "series").text
        assert run["series_uid"] in series_table and "ignored" in series_table
        index_shot = tmp_path / "status-index.png"
        driver.save_screenshot(str(index_shot))

        job_link.click()
        stages = driver.find_element(By.ID, "stages").text
        for state in JOB_STATES:
            assert state in stages
        assert " s" in stages  # the times are shown
        log = driver.find_element(By.ID, "log").text
        for step in PIPELINE_STEPS:
            assert f"job.stage.{step}" in log
        deliveries = driver.find_element(By.ID, "deliveries").text
        assert "archive" in deliveries and "sent" in deliveries and "offline" in deliveries
        overlay = driver.find_element(By.ID, "overlay")
        width = driver.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0", overlay
        )
        assert width > 100, "the overlay PNG did not load"
        job_shot = tmp_path / "status-job.png"
        driver.save_screenshot(str(job_shot))
    finally:
        driver.quit()
    print(f"\nstatus page screenshots: {index_shot} {job_shot}")
    assert job_shot.stat().st_size > 10_000
