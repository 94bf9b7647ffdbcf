"""Fixtures shared by the integration tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import calcium_weights


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped calcium model, or (until one is shipped) a tiny one trained here."""
    return calcium_weights(tmp_path_factory)
