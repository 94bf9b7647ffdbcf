"""Benchmark: the calcium pipeline (registration, score box, score map, feedback) on CPU.

Untrained networks of the shipped architecture: the networks' work per scan does not depend on
the weights. The exact method's does (it scores the candidates the network labels), so it is
timed at its worst case, every candidate of the box labelled (threshold 0), and, where the
shipped model is installed, with the shipped weights as the node runs them. Prints seconds per
512 x 512 x 100 scan and the process's peak RSS; never asserts on time (the target is at most
2 s on this 2-core CPU and 3 GB).
"""

from __future__ import annotations

import hashlib
import json
import resource
import statistics

import numpy as np
import pytest
import torch

from models.calcium.inference import MANIFEST, WEIGHTS_DIR, CalciumScorer
from models.calcium.networks import RegistrationNet, ScoreNet
from models.phantoms.case import CaseOptions, generate_case

pytestmark = pytest.mark.bench


def _print_seconds(capsys, scorer: CalciumScorer, ct, label: str) -> None:
    scorer.score(ct)
    seconds = [scorer.score(ct).seconds for _ in range(5)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert ct.GetSize() == (512, 512, 100)
    with capsys.disabled():
        print(
            f"\n[bench] calcium pipeline, {label}, 512x512x100 on CPU "
            f"({torch.get_num_threads()} threads): median {statistics.median(seconds):.2f} s, "
            f"max {max(seconds):.2f} s; peak RSS of the test process {peak_mb:.0f} MB"
        )


@pytest.mark.parametrize("method", ["regression", "exact"])
def test_seconds_per_scan_on_cpu(tmp_path, capsys, method: str) -> None:
    torch.manual_seed(0)
    files = {"atlas": "atlas.npz", "registration": "registration.pt", "score": "score.pt"}
    np.savez(tmp_path / files["atlas"], volume=np.full((80, 80, 80), -500, np.float16))
    torch.save(RegistrationNet(width=16).state_dict(), tmp_path / files["registration"])
    torch.save(ScoreNet(width=16).state_dict(), tmp_path / files["score"])
    digest = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in files.values()}
    manifest = {"name": "untrained", "version": "0", "files": files, "sha256": digest,
                "registration": {"width": 16}, "score": {"width": 16, "prior": "candidate"}}  # fmt: skip
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))

    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    ct = case.grid.to_image(case.image)
    scorer = CalciumScorer(tmp_path, device="cpu", method=method)
    scorer.exact_threshold = 0.0  # exact: every candidate labelled, the most work it can do
    label = "untrained, " + ("exact, every candidate labelled" if method == "exact" else method)
    _print_seconds(capsys, scorer, ct, label)


@pytest.mark.skipif(not (WEIGHTS_DIR / MANIFEST).exists(), reason="no shipped calcium model")
@pytest.mark.parametrize("method", ["regression", "exact"])
def test_seconds_per_scan_with_the_shipped_model(capsys, method: str) -> None:
    case = generate_case(20261127, 3, CaseOptions(protocol=(2.5, 2.5), n_slices=100))
    scorer = CalciumScorer(device="cpu", method=method)
    _print_seconds(capsys, scorer, case.grid.to_image(case.image), f"shipped model, {method}")
