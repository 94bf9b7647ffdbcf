"""The organ training commands end to end on tiny phantoms (the CI configuration of issue 6).

Generates 2 phantoms per split at matrix 64, trains the sparse base for a few iterations, ships
it into a temp dir (loaded back through models.organs.registry), runs the transfer study for
one task, size 2, one seed, all three modes and 2 steps. Checks that every output exists, that
the shipped file reproduces the trained network on clipped HU, and that the repository's
shipped weights were not touched (tests/unit/training/organs/test_common.py checks the loss,
test_transfer.py that fine-tuning moves only the fine-tune layers).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.organs import registry
from models.organs.unet import UNet3D
from tests.tools import REPO
from training.organs.common import to_input

SHIPPED = REPO / "models" / "weights" / "organs_base.pt"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("organs")
    shipped_before = _sha(SHIPPED)
    data, base, transfer, weights = (root / n for n in ("data", "base", "transfer", "weights"))
    _run("training.organs.data", "--out", str(data), "--limit", "2", "--matrix", "64",
         "--split", "train", "test", "downstream")  # fmt: skip
    _run("training.organs.train", "--data", str(data), "--out", str(base), "--iterations", "4",
         "--train-limit", "2", "--test-limit", "1", "--patch", "92", "100", "100")  # fmt: skip
    _run("training.organs.ship", "--run", str(base), "--out", str(weights))
    # a second stage continuing from the first, shipped with both stages in its card
    cont, cont_weights = root / "cont", root / "cont_weights"
    _run("training.organs.train", "--data", str(data), "--out", str(cont), "--iterations", "2",
         "--train-limit", "2", "--test-limit", "1", "--patch", "92", "100", "100",
         "--init", str(base / "final.pt"), "--seed", "1")  # fmt: skip
    _run("training.organs.ship", "--run", str(cont), "--init-run", str(base), "--compare",
         str(base), "--out", str(cont_weights))  # fmt: skip
    _run("training.organs.transfer", "--data", str(data), "--base", str(base / "final.pt"),
         "--out", str(transfer), "--tasks", "vertebrae", "--sizes", "2", "--seeds", "0",
         "--steps", "2", "--patch", "92", "92", "92", "--test-patch", "92", "92", "92",
         "--crops-per-phantom", "1", "--pool-limit", "2", "--test-limit", "1")  # fmt: skip
    assert _sha(SHIPPED) == shipped_before, "the training commands touched the shipped weights"
    return {"data": data, "base": base, "transfer": transfer, "weights": weights, "cont": cont,
            "cont_weights": cont_weights}  # fmt: skip


def test_train_outputs(runs):
    base = runs["base"]
    for name in ("final.pt", "checkpoint.pt", "curve.png", "run.json"):
        assert (base / name).stat().st_size > 0, name
    record = json.loads((base / "run.json").read_text())
    assert len(record["history"]) == 4
    assert all(np.isfinite(loss) for _, loss in record["history"])
    assert "heart" in record["test_dice"] and 0 <= record["test_dice"]["mean"] <= 1


def test_shipped_copy_loads_and_matches_training_net(runs):
    """The .pt takes clipped HU (the training scale folded into enc1a) and its sha256 is in the
    spec: the registry loads it and gives the training network's output to float16 precision."""
    net, spec = registry.load_model(runs["weights"] / "organs_base.json")
    assert spec.width == 4 and spec.n_classes == 23 and "heart" in spec.trained_channels
    trained = UNet3D(23, 4)
    trained.load_state_dict(torch.load(runs["base"] / "final.pt", weights_only=True))
    hu = np.random.default_rng(0).uniform(-1000, 800, (92, 92, 92)).astype(np.float32)
    with torch.no_grad():
        a = trained(torch.from_numpy(to_input(hu))[None, None])
        b = net(torch.from_numpy(np.clip(hu, -500, 400))[None, None])
    assert torch.allclose(a, b, atol=2e-2)
    assert (runs["weights"] / "organs_base.md").read_text().count(spec.sha256) == 1


def test_continued_run_records_its_start_and_card_names_both_stages(runs):
    record = json.loads((runs["cont"] / "run.json").read_text())
    assert record["init"]["sha256"] == _sha(runs["base"] / "final.pt")
    assert len(record["history"]) == 2
    text = (runs["cont_weights"] / "organs_base.md").read_text()
    assert "--out RUN1 --mode sparse --iterations 4" in text
    assert "--iterations 2" in text and "--init RUN1/final.pt" in text
    assert record["init"]["sha256"] in text
    header = next(line for line in text.splitlines() if line.startswith("| structure"))
    assert "6 steps (shipped)" in header and "sparse labels, 4 steps" in header


def test_transfer_outputs(runs):
    results = json.loads((runs["transfer"] / "results.json").read_text())
    assert sorted(r["mode"] for r in results) == ["all", "finetune", "scratch"]
    assert all(r["size"] == 2 and len(r["losses"]) == 2 for r in results)
    assert all(0.0 <= r["dice"] <= 1.0 for r in results)
    # Each record keeps its learning rate, so runs of one mode at two rates stay apart.
    assert {r["mode"]: r["lr"] for r in results} == {"scratch": 2e-3, "all": 2e-3, "finetune": 1e-2}
    table = (runs["transfer"] / "transfer_table.md").read_text()
    assert "vertebrae" in table and "fine-tune last conv + head, lr 0.01" in table
    assert (runs["transfer"] / "transfer.png").stat().st_size > 0
