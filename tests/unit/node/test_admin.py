"""What the admin CLI reads from its arguments: `--since` as a duration or a time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from node.admin import parse_since
from node.db import (
    utcnow,
)


def test_parse_since() -> None:
    now = utcnow()
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-02T03:04:05", now).tzinfo is not None
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)
