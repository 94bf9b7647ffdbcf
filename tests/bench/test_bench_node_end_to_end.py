"""Benchmark: end-to-end latency of the node with Orthanc as the PACS, and its peak RSS.

A 100-slice 512 x 512 phantom series goes from Orthanc to the node (REST store, synchronous:
it returns when the last instance is acknowledged); the clock runs until all result objects
of the job are stored in Orthanc. The figure is that time minus the completion timeout, for
the first series after start (torch and the model load then) and for a second one (warm).
Peak RSS of `ctnode serve` is its VmHWM at the end. Prints figures; never asserts on time
(the issue's target: at most 10 s on this CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.writer import write_case
from tests.nodeproc import NodeProcess, free_port, wait_for
from tests.orthanc import ORTHANC_AE, Orthanc, require_orthanc

pytestmark = pytest.mark.bench
COMPLETE_AFTER_S = 3.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_latency_last_instance_to_results_in_orthanc(tmp_path: Path, capsys, weights) -> None:
    require_orthanc()
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), free_port())
    pacs = {"name": "pacs", "ae_title": ORTHANC_AE, "host": "127.0.0.1"}
    node = NodeProcess(
        tmp_path / "node",
        free_port(),
        sections={
            "series": {"complete_after_s": COMPLETE_AFTER_S, "check_interval_s": 0.5},
            "send": {"check_interval_s": 0.5},
            "calcium": {"weights_dir": str(weights), "device": "cpu"},
        },
        lists={
            "peers": [{**pacs, "port": orthanc.dicom_port}],
            "destinations": [{**pacs, "port": orthanc.dicom_port}],
            # Calcium only: the figure is issue 4's (the calcium results); organ segmentation
            # has its own benchmark (test_bench_organs.py).
            "routes": [{"name": "chest-ct-calcium", "pipeline": "calcium"}],
        },
    )
    studies = []
    for seed in (31, 32):
        case = generate_case(seed, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
        folder = write_case(case, tmp_path / f"case_{seed}", dicom=True)
        studies.append(sorted((folder / "dicom").glob("*.dcm")))
    node.start()
    figures = []
    try:
        orthanc.start({"NODE": ("CTNODE", "127.0.0.1", node.port)})
        for files in studies:
            answers = orthanc.upload(files)
            study = answers[0]["ParentStudy"]
            before = len(orthanc.get(f"/studies/{study}/instances"))
            start = time.perf_counter()
            orthanc.store("NODE", [study])
            last_instance = time.perf_counter()

            def results_stored(study=study, before=before):
                jobs = node.query("SELECT id, state FROM jobs ORDER BY id DESC LIMIT 1")
                if not jobs or jobs[0][1] not in ("done", "failed"):
                    return None
                assert jobs[0][1] == "done", node.log_text()[-2000:]
                expected = node.query("SELECT COUNT(*) FROM results WHERE job_id = ?", jobs[0][0])
                count = len(orthanc.get(f"/studies/{study}/instances")) - before
                return count >= expected[0][0]

            wait_for(results_stored, 300, "the results in Orthanc", poll_s=0.05)
            done = time.perf_counter()
            figures.append((last_instance - start, done - last_instance))
        rss = peak_rss_mb(node.process.pid)
    finally:
        orthanc.stop()
        node.stop()
    with capsys.disabled():
        print(
            f"\n[bench] Orthanc -> ctnode -> Orthanc, 100 slices 512x512, completion timeout "
            f"{COMPLETE_AFTER_S:g} s (checked every 0.5 s):"
        )
        for label, (send_s, latency_s) in zip(
            ("first (cold)", "second (warm)"), figures, strict=True
        ):
            print(
                f"  {label}: Orthanc store {send_s:.2f} s; last instance -> results in Orthanc "
                f"{latency_s:.2f} s, minus the timeout {latency_s - COMPLETE_AFTER_S:.2f} s"
            )
        print(f"  peak RSS of ctnode serve: {rss:.0f} MB")
