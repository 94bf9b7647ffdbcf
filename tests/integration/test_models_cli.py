"""`ctnode models import` and `ctnode models list` through the console script, as a user runs
them: an .h5 written in the release's Keras layout is imported, listed, chosen and checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from models.files import sha256
from models.organs import registry
from tests.integration.test_cli_demo import ctnode
from tests.tools import REPO
from tests.unit.models.organs.test_importers import (
    assert_same_network,
    random_net,
    write_keras3_weights_h5,
    write_keras_h5,
)


def run(args: list[str], models_dir: Path, model: str = "") -> subprocess.CompletedProcess:
    env = {
        "CTNODE_ORGANS__MODELS_DIR": str(models_dir),
        "CTNODE_ORGANS__MODEL": model,
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [ctnode(), "models", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def listed(models_dir: Path, model: str = "") -> dict:
    proc = run(["list", "--json"], models_dir, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_import_an_h5_then_list_and_choose_it(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    net = random_net(seed=11)
    source = tmp_path / "unet3d_Isomulti1v810.h5"
    write_keras_h5(net, source, full_model=True)

    proc = run(
        [
            "import",
            str(source),
            "--name",
            "tiny",
            "--spacing",
            "2",
            "2.5",
            "2",
            "--input-side",
            "92",
        ],
        models_dir,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported tiny" in proc.stdout and "(assumed)" in proc.stdout
    folder = models_dir / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.json", "tiny.md", "tiny.pt"]

    # The spec and the card say what was imported, from where, and what is assumed.
    spec = registry.read_spec(folder / "tiny.json")
    assert (spec.width, spec.n_classes, spec.input_side) == (2, 23, 92)
    assert spec.spacing_mm == [2.0, 2.5, 2.0]
    assert spec.label_values == list(range(1, 23)) and spec.channels[-1] == "background"
    card = (folder / "tiny.md").read_text()
    assert sha256(source) in card
    assert spec.sha256 == sha256(folder / "tiny.pt") and spec.sha256 in card
    assert str(source) in card and "assumption" in card
    assert "| 4 | 5 | heart |" in card  # channel 4 is the heart, Label value 5

    # The installed model computes what the source network computes.
    loaded, _ = registry.load_model(folder / "tiny.json", "cpu")
    assert_same_network(net, loaded)

    # Listed beside the shipped models; used by the organs pipeline once configured.
    report = listed(models_dir)
    rows = {row["name"]: row for row in report["models"]}
    assert rows["tiny"]["kind"] == "imported" and rows["tiny"]["weights_check"] == "ok"
    assert rows["tiny"]["used_by"] == []
    assert all(row["kind"] == "shipped" for name, row in rows.items() if name != "tiny")
    chosen = {row["name"]: row for row in listed(models_dir, model="tiny")["models"]}
    assert chosen["tiny"]["used_by"][0] == "organs"
    table = run(["list"], models_dir, model="tiny")
    assert table.returncode == 0 and "tiny" in table.stdout and "organs" in table.stdout

    # A second import under the same name is refused; a damaged weight file is reported.
    again = run(["import", str(source), "--name", "tiny", "--input-side", "92"], models_dir)
    assert again.returncode == 1 and "already installed" in again.stdout
    weights = folder / "tiny.pt"
    weights.write_bytes(weights.read_bytes()[:-10])
    damaged = {row["name"]: row for row in listed(models_dir)["models"]}["tiny"]
    assert "sha256" in damaged["weights_check"]


def test_import_refuses_a_network_without_the_published_channels_unless_labelled(tmp_path):
    models_dir = tmp_path / "models"
    source = tmp_path / "heart_aorta.h5"
    write_keras_h5(random_net(seed=12, n_classes=3), source, full_model=False)
    refused = run(["import", str(source)], models_dir)
    assert refused.returncode == 1 and "--labels" in refused.stdout
    proc = run(["import", str(source), "--labels", "heart,aorta"], models_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = registry.read_spec(models_dir / "heart_aorta" / "heart_aorta.json")
    assert spec.channels == ["heart", "aorta", "background"] and spec.label_values == [5, 1]
    assert spec.spacing_mm == [1.5, 1.5, 1.5] and spec.input_side == 132
    missing = listed(models_dir, model="nonexistent")
    assert "no organ model named 'nonexistent'" in missing["organs_model_problem"]
    torch.manual_seed(0)  # keep the global generator's use explicit for later tests


def test_import_a_keras3_file_checked_against_the_publishers_sha256(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    net = random_net(seed=13)
    source = tmp_path / "unet3d.weights.h5"
    write_keras3_weights_h5(net, source)
    published = sha256(source)

    proc = run(["import", str(source), "--name", "k3", "--sha256", published], models_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"sha256 {published} (matches --sha256)" in proc.stdout
    loaded, _ = registry.load_model(models_dir / "k3" / "k3.json", "cpu")
    assert_same_network(net, loaded)

    # Damaged in place, same size: the printed hash differs, and --sha256 refuses it.
    damaged = bytearray(source.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    source.write_bytes(bytes(damaged))
    refused = run(["import", str(source), "--name", "k3b", "--sha256", published], models_dir)
    assert refused.returncode == 1
    assert f"not the expected {published}" in " ".join(refused.stdout.split())
    assert not (models_dir / "k3b").exists()
    assert sorted(p.name for p in models_dir.iterdir()) == ["k3"]  # nothing else written
