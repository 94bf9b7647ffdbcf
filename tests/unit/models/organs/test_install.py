"""Reading a published weight file: the publisher's sha256 is checked (models/organs/install.py)."""

from __future__ import annotations

from hashlib import sha256

import pytest

from models.organs.install import read_source
from models.organs.registry import ModelFileError
from tests.unit.models.organs.test_importers import random_net, write_keras_h5


def test_read_source_checks_the_publishers_sha256(tmp_path):
    path = tmp_path / "unet.h5"
    write_keras_h5(random_net(), path, full_model=False)
    digest = sha256(path.read_bytes()).hexdigest()
    assert read_source(path).sha256 == digest
    assert read_source(path, digest.upper()).data == path.read_bytes()
    with pytest.raises(ModelFileError, match="not 64 hexadecimal digits"):
        read_source(path, "abc")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # in place: same size
    path.write_bytes(bytes(damaged))
    with pytest.raises(ModelFileError, match=f"not the expected {digest}"):
        read_source(path, digest)
