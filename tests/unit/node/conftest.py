"""Fixtures shared by the tests of node/ modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_settings
from node.db import init_db, make_session_factory


@pytest.fixture
def node(tmp_path: Path):
    """Settings with a spool and an SQLite database under tmp_path, and a session factory."""
    environ = {
        "CTNODE_STORAGE__SPOOL_DIR": str(tmp_path / "spool"),
        "CTNODE_STORAGE__DATABASE_URL": f"sqlite:///{tmp_path / 'ctnode.db'}",
        "CTNODE_SERIES__COMPLETE_AFTER_S": "5",
    }
    settings = load_settings(environ=environ)
    engine = init_db(settings.storage.database_url)
    yield settings, make_session_factory(engine)
    engine.dispose()
