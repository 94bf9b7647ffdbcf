"""The built wheel is a complete node: installed into a fresh virtual environment (no access to
the repository or to the test venv's packages), its `ctnode demo` runs from a folder outside the
repository with the embedded configuration and the shipped weights read as package data.

Bounded and offline-friendly: the dependencies are pinned to the versions of the running venv
(`pip freeze` as constraints), so pip takes them from its local cache (torch from the local
find-links folder) instead of resolving anew; nothing is downloaded once the cache holds them.
Cost on the 2-core development machine: about 90 s of CPU in all (building the wheel, pip
writing torch into the new venv, the demo); 7 min 54 s of wall time in a run where the machine
had a load average of 15.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest

from node.results.sr import read_calcium_sr
from tests.tools import REPO

# What a working tree may hold that is not source (never copied to the build folder).
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "data", "runs", "out", "demo-output", "*.egg-info",
    "__pycache__", ".pytest_cache", ".ruff_cache", ".device", ".whl",
)  # fmt: skip


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float):
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert proc.returncode == 0, f"{args[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_env() -> dict[str, str]:
    """The user's environment without this test run's venv or source path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTNODE_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built (`pip wheel --no-deps`) from a copy of the working tree, so the
    repository gets no build/ folder whose stale files a later build would pick up."""
    source = tmp_path_factory.mktemp("source") / "ctnode"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        cwd=out,
        env=_clean_env(),
        timeout=300,
    )
    (built,) = out.glob("ctnode-*.whl")
    return built


def test_wheel_holds_the_node_and_its_data_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"node", "models", "training", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "node/config.toml" in names
    assert zipfile.ZipFile(wheel).read("node/config.toml") == (REPO / "config.toml").read_bytes()
    assert "node/migrations/script.py.mako" in names
    assert "node/migrations/versions/0001_initial_schema.py" in names
    shipped = sorted(p.name for p in (REPO / "models" / "weights").iterdir())
    assert sorted(n.removeprefix("models/weights/") for n in names if "/weights/" in n) == shipped
    # No tests, training results or other data besides the two lists above.
    data = [n for n in names if not n.endswith(".py") and ".dist-info/" not in n]
    assert all(
        n.startswith("models/weights/")
        or n in ("node/config.toml", "node/migrations/script.py.mako")
        for n in data
    ), data
    size_mb = wheel.stat().st_size / 1e6
    print(f"\nwheel {wheel.name}: {size_mb:.1f} MB, {len(names)} files")
    assert size_mb < 10, "the wheel grew: stray data?"


def test_installed_wheel_runs_the_demo_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    env = _clean_env()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=120)
    frozen = _run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        cwd=tmp_path,
        env=env,
        timeout=60,
    ).stdout
    # Only pins of what the node needs; the test venv's own extras are not installed.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in frozen.splitlines() if "==" in line and "@" not in line)
    )
    _run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), str(wheel)],
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import node, models; print(node.__file__)"],
        cwd=elsewhere,
        env=env,
        timeout=60,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"node imported from {where}, not the new venv"
    proc = _run(
        [str(venv / "bin" / "ctnode"), "demo"],
        cwd=elsewhere,
        env={**env, "COLUMNS": "120"},
        timeout=600,
    )
    # The score table: the SR's total beside the phantom's truth, and the job done.
    assert "Calcium score: returned SR vs phantom truth" in proc.stdout
    assert "total" in proc.stdout and "job.done" in proc.stdout
    report = read_calcium_sr(pydicom.dcmread(elsewhere / "demo-output" / "returned" / "sr.dcm"))
    assert f"{report.agatston_total:.1f}" in proc.stdout
