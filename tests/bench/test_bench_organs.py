"""Benchmark: organ segmentation of a 512 x 512 x 100 chest CT (a phantom) with the shipped model.

Prints the seconds of `OrganSegmenter.segment` (resampling, windows, post-processing, back to
the CT grid), the model load time, the peak RSS of a process that only reads the CT and
segments it, and the Dice of each structure against the phantom's truth. Never asserts on
time (target: at most 60 s on this 2-core CPU; RSS well under 3 GB).

The model is models/weights/organs_base.json; CTNODE_BENCH_ORGANS_SPEC=path/to/spec.json
measures another one (e.g. an imported model). CTNODE_BENCH_THREADS sets torch's CPU threads
(default 1: the development CPU is shared); CTNODE_BENCH_DEVICE the device (default auto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.organs.registry import SHIPPED_BASE
from models.phantoms.case import CaseOptions, generate_case
from tests.tools import REPO

pytestmark = pytest.mark.bench

CHILD = """
import json, resource, sys, time
import SimpleITK as sitk, torch
torch.set_num_threads(int(sys.argv[4]))
from models.organs.inference import OrganSegmenter
ct = sitk.ReadImage(sys.argv[1])
start = time.perf_counter()
segmenter = OrganSegmenter(sys.argv[2], device=sys.argv[5])
loaded = time.perf_counter() - start
runs = [segmenter.segment(ct) for _ in range(2)]
sitk.WriteImage(runs[-1].labels, sys.argv[3])
print(json.dumps({
    "load_s": loaded, "seconds": [r.seconds for r in runs], "device": runs[-1].device,
    "window_side": segmenter.window_side, "model_grid": runs[-1].model_grid,
    "volumes_ml": runs[-1].volumes_ml, "threads": torch.get_num_threads(),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def test_organ_segmentation_of_a_512x512x100_chest_ct(tmp_path, capsys) -> None:
    spec_path = Path(os.environ.get("CTNODE_BENCH_ORGANS_SPEC", SHIPPED_BASE))
    if not spec_path.is_file():
        pytest.skip(
            f"no organ model at {spec_path}: the shipped base model (models/weights/"
            "organs_base.json) is not there yet; set CTNODE_BENCH_ORGANS_SPEC to measure another"
        )
    case = generate_case(20261128, options=CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    assert ct.GetSize() == (512, 512, 100)
    ct_path, labels_path = tmp_path / "ct.nii", tmp_path / "labels.nii"
    sitk.WriteImage(ct, str(ct_path))
    threads = os.environ.get("CTNODE_BENCH_THREADS", "1")
    device = os.environ.get("CTNODE_BENCH_DEVICE", "auto")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(ct_path),
            str(spec_path),
            str(labels_path),
            threads,
            device,
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": threads},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    assert labels.shape == case.labels.shape
    spec = json.loads(spec_path.read_text())
    scores = {
        name: dice(labels == value, case.labels == value)
        for name, value in zip(spec["channels"], spec["label_values"], strict=False)
        if (case.labels == value).any()
    }
    with capsys.disabled():
        print(
            f"\n[bench] organ segmentation, 512x512x100 (0.{case.grid.spacing[0] * 1000:.0f} mm "
            f"pixels, 2.5 mm slices) with {spec['name']} {spec['version']} (width "
            f"{spec['width']}, {' x '.join(f'{v:g}' for v in spec['spacing_mm'])} mm, window "
            f"{report['window_side']}) on {report['device']} ({report['threads']} threads): "
            f"{report['seconds'][0]:.1f} s, again {report['seconds'][1]:.1f} s; model loaded in "
            f"{report['load_s']:.1f} s; peak RSS {report['peak_rss_mb']:.0f} MB; model grid "
            f"{report['model_grid']['size_zyx']}"
        )
        print(
            "[bench] Dice against the phantom truth: "
            + ", ".join(f"{name} {value:.3f}" for name, value in scores.items())
        )
