"""Settings: embedded defaults, a file on top, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_settings


def test_embedded_defaults_load() -> None:
    settings = load_settings(environ={})
    assert settings.demo.out_dir == Path("demo-output")
    assert 0 <= settings.demo.category <= 4


def test_file_then_environment_override(tmp_path: Path) -> None:
    file = tmp_path / "site.toml"
    file.write_text('[demo]\nseed = 11\nout_dir = "/data/demo"\n')
    settings = load_settings(file, environ={"CTNODE_DEMO__SEED": "12"})
    assert settings.demo.seed == 12  # environment wins over the file
    assert settings.demo.out_dir == Path("/data/demo")  # the file wins over the default


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CTNODE_DEMO__SEED": "seven"}, "cannot read 'seven' as int"),
        ({"CTNODE_DEMO__COLOUR": "red"}, "no setting [demo] colour"),
        ({"CTNODE_DEMO__CATEGORY": "9"}, "demo.category must be 0-4"),
    ],
)
def test_bad_values_are_rejected_with_the_key(environ: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(environ=environ)


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[demo]\nsede = 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_settings(file, environ={})
