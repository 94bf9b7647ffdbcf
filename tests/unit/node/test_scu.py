"""Addressing a remote node for `ctnode echo` (and later the sender)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_settings
from node.scu import RemoteNode, resolve_remote


@pytest.fixture
def settings(tmp_path: Path):
    file = tmp_path / "site.toml"
    file.write_text(
        '[[destinations]]\nname = "pacs"\nae_title = "PACS_OUT"\nhost = "pacs.example"\nport = 104\n'
        '[[peers]]\nname = "pacs"\nae_title = "PACS_IN"\nhost = "10.0.0.5"\nport = 11112\n'
        '[[peers]]\nname = "ct1"\nae_title = "CT1"\nhost = "10.0.0.6"\nport = 4006\n'
    )
    return load_settings(file, environ={})


def test_names_resolve_destinations_first(settings) -> None:
    assert resolve_remote("pacs", settings) == RemoteNode("pacs", "PACS_OUT", "pacs.example", 104)
    assert resolve_remote("ct1", settings).ae_title == "CT1"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("ORTHANC@127.0.0.1:4242", ("ORTHANC", "127.0.0.1", 4242)),
        ("A B@host.example:104", ("A B", "host.example", 104)),
        ("V6@[::1]:11112", ("V6", "::1", 11112)),
    ],
)
def test_explicit_addresses(settings, target: str, expected: tuple) -> None:
    remote = resolve_remote(target, settings)
    assert (remote.ae_title, remote.host, remote.port) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nowhere", "neither a configured destination or peer (ct1, pacs)"),
        ("X@host", "neither"),
        ("X@host:0", "port"),
        ("AN_AE_TITLE_OF_17C@host:104", "1-16 characters"),
    ],
)
def test_bad_targets_say_why(settings, target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_remote(target, settings)
