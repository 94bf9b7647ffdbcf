"""What every model loader checks about its files, without torch: the error a missing or
altered file raises, and the sha256 the model cards and specs record."""

from __future__ import annotations

import hashlib
from pathlib import Path


class ModelFileError(RuntimeError):
    """A model's spec, manifest or weight file is missing, unreadable, or not the file its card
    or spec describes (the node fails the job as retryable: installing the right file fixes
    it)."""


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (weight files are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
