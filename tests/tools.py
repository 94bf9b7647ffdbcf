"""Shared helpers for tests: real peers and the real data folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "real"


def require_tool(name: str, package: str) -> str:
    """Path of a command-line peer, or skip (only outside CI, where tests/run.sh installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt package {package}; tests/run.sh installs it)")
    return path


def require_real_data(*parts: str) -> Path:
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data folder {path} absent (present in CI beside the checkout)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy reports for one DICOM file (warnings are not errors)."""
    tool = require_tool("dciodvfy", "dicom3tools")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
