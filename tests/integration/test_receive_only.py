"""A receive-only node ([worker] enabled = false, a host that only takes in series for a
shared database) never loads torch: it receives a series from storescu, completes it and
routes it to a job, and its process has no torch library mapped.

The check reads /proc/<pid>/maps of the real `ctnode serve` process: importing torch maps
libtorch (and torch/_C); nothing new is exposed by the node for the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_flow_dcmtk import storescu
from tests.nodeproc import NodeProcess, free_port, wait_for
from tests.synthetic_dicom import hu_volume, write_series
from tests.tools import require_tool

SLICES = 16  # the default route's min_instances


def torch_mappings(pid: int) -> list[str]:
    """The paths of torch's shared libraries mapped into process `pid`."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in lines if "torch" in line.split()[-1]})


def test_a_receive_only_node_receives_and_routes_without_torch(tmp_path: Path) -> None:
    require_tool("storescu", "dcmtk")
    files = write_series(tmp_path / "series", hu_volume(SLICES))
    node = NodeProcess(
        tmp_path / "node",
        free_port(),
        sections={
            "worker": {"enabled": False},
            "series": {"complete_after_s": 1, "check_interval_s": 0.5},
        },
        lists={
            "peers": [{"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 1}]
        },
    ).start()
    try:
        storescu(node, files)
        jobs = wait_for(
            lambda: node.query("SELECT pipeline, state FROM jobs"), 60, "the series' job"
        )
        assert jobs == [("calcium", "queued")]  # received, completed, routed; nobody runs it
        assert node.query("SELECT state, instance_count FROM series") == [("routed", SLICES)]
        assert torch_mappings(node.process.pid) == [], node.log_text()[-2000:]
    finally:
        assert node.stop() == 0, node.log_text()[-3000:]


def test_the_maps_check_sees_torch_when_it_is_loaded() -> None:
    """The control: a process that imports torch shows it in the same check."""
    probe = subprocess.Popen(
        [sys.executable, "-c", "import sys, torch; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout.readline().strip() == "ready"
        assert any("libtorch" in path for path in torch_mappings(probe.pid))
    finally:
        probe.communicate("", timeout=30)
