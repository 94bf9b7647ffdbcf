"""Benchmark: assembling a 300-slice 512 x 512 phantom series, against dcm2niix on the same folder.

Prints the node's wall time (grouping + geometry + reading + HU conversion) as a ratio to
dcm2niix converting the same folder to uncompressed NIfTI in the same run (target: at most
1.5x), and the peak memory growth of a fresh process assembling it, relative to the volume's
size (target: about 2x: the array and SimpleITK's copy). Never asserts on wall time.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.phantoms.case import CaseOptions, generate_case
from models.phantoms.writer import write_case
from node.volume.assembly import assemble
from node.volume.stacks import find_stacks
from tests.integration.test_assembly_vs_dcm2niix import dcm2niix_binary

pytestmark = pytest.mark.bench

REPEATS = 3
MEMORY_PROBE = """
import json, sys
from pathlib import Path
from node.volume.assembly import assemble
from node.volume.stacks import find_stacks
def peak_kb():
    # VmHWM, not ru_maxrss: ru_maxrss starts at the parent's size after fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = peak_kb()
scan = find_stacks(Path(sys.argv[1]))
image = assemble(scan.stacks[0]).image
after = peak_kb()
print(json.dumps({"before_kb": before, "after_kb": after}))
"""


def test_assembly_against_dcm2niix(tmp_path: Path, capsys) -> None:
    case = generate_case(7, 2, CaseOptions(matrix=512, protocol=(2.5, 2.5), n_slices=300))
    folder = write_case(case, tmp_path / "case", dicom=True) / "dicom"
    binary = dcm2niix_binary()

    node_times, tool_times = [], []
    for attempt in range(REPEATS):
        out = tmp_path / f"d2n_{attempt}"
        out.mkdir()
        start = time.perf_counter()
        subprocess.run(
            [binary, "-z", "n", "-b", "n", "-o", str(out), str(folder)],
            check=True,
            capture_output=True,
        )
        tool_times.append(time.perf_counter() - start)
        shutil.rmtree(out)
        start = time.perf_counter()
        image = assemble(find_stacks(folder).stacks[0]).image
        node_times.append(time.perf_counter() - start)
    assert image.GetSize() == (512, 512, 300)
    volume_mb = 512 * 512 * 300 * 2 / 2**20

    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    rss = json.loads(probe.stdout.strip().splitlines()[-1])
    growth_mb = (rss["after_kb"] - rss["before_kb"]) / 1024
    node, tool = statistics.median(node_times), statistics.median(tool_times)
    with capsys.disabled():
        print(
            f"\n[bench] assembly 512x512x300: node median {node:.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in node_times)}), dcm2niix -z n median "
            f"{tool:.2f} s: ratio {node / tool:.2f}x (target <= 1.5x); peak RSS growth "
            f"{growth_mb:.0f} MB for a {volume_mb:.0f} MB int16 volume = "
            f"{growth_mb / volume_mb:.2f}x the volume"
        )
    assert np.isfinite(node)
