"""Settings: embedded defaults, a file on top, environment overrides, clear errors."""

from __future__ import annotations

import re
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


def test_node_defaults_and_allow_list() -> None:
    settings = load_settings(environ={})
    assert settings.node.ae_title == "CTNODE"
    assert settings.node.port == 11112
    assert settings.node.accept_unknown_peers is False  # the allow-list is on by default
    assert settings.storage.database_url.startswith("sqlite:///")
    assert settings.series.complete_after_s == 60
    assert settings.peer_by_ae_title("STORESCU ").name == "local-storescu"  # DICOM pads
    assert settings.destinations == ()


def test_site_file_replaces_peers_and_sets_per_peer_timeout(tmp_path: Path) -> None:
    file = tmp_path / "site.toml"
    file.write_text(
        '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\n'
        "complete_after_s = 15\n"
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\n'
    )
    settings = load_settings(file, environ={"CTNODE_SERIES__COMPLETE_AFTER_S": "90"})
    assert [p.name for p in settings.peers] == ["pacs"]  # the defaults' peers are gone
    assert settings.complete_after_s_for("PACS") == 15
    assert settings.complete_after_s_for("OTHER") == 90.0
    assert settings.destinations[0].port == 104


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[node]\nae_title = "A_TITLE_OF_MORE_THAN_16"\n', "node.ae_title"),
        ('[node]\nae_title = "BAD\\\\AE"\n', "node.ae_title"),
        ('[node]\nbind = "localhost"\n', "node.bind"),
        ("[node]\nport = 70000\n", "node.port"),
        ('[node]\nport = "104"\n', "[node] port: expected int, got '104'"),
        ("[node]\nmax_associations = 0\n", "node.max_associations"),
        ('[storage]\ndatabase_url = "not a url"\n', "storage.database_url"),
        ("[series]\ncomplete_after_s = 0\n", "series.complete_after_s"),
        ('[[peers]]\nname = "a"\nae_title = "A"\nhost = "h"\n', "[[peers]] #1: missing"),
        (
            '[[peers]]\nname = "a"\nae_title = "A"\nhost = "h"\nport = 1\n'
            '[[peers]]\nname = "a"\nae_title = "B"\nhost = "h"\nport = 1\n',
            "names must be unique",
        ),
        (
            '[[peers]]\nname = "a"\nae_title = "A"\nhost = "h"\nport = 1\n'
            '[[peers]]\nname = "b"\nae_title = "A"\nhost = "h"\nport = 1\n',
            "AE titles must be unique",
        ),
        ('[[destinations]]\nname = "d"\nae_title = "D"\nhost = ""\nport = 1\n', "host"),
        ('peers = "x"\n', "expected an array of tables"),
    ],
)
def test_bad_network_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(file, environ={})


def test_list_sections_cannot_come_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="cannot be set from the environment"):
        load_settings(environ={"CTNODE_PEERS__AE_TITLE": "X"})


def test_environment_overrides_node_settings() -> None:
    settings = load_settings(
        environ={"CTNODE_NODE__PORT": "4242", "CTNODE_NODE__ACCEPT_UNKNOWN_PEERS": "true"}
    )
    assert settings.node.port == 4242
    assert settings.node.accept_unknown_peers is True


def test_routes_from_a_site_file_and_their_checks(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[routes]]\nname = "thin"\npipeline = "calcium"\nmax_slice_thickness_mm = 3.0\n'
        'description_include = ["*chest*"]\n'
    )
    (route,) = load_settings(site, environ={}).routes
    assert route.max_slice_thickness_mm == 3.0 and route.description_include == ("*chest*",)
    assert route.modalities == ("CT",)  # the defaults of a rule
    site.write_text('[[routes]]\nname = "x"\npipeline = "organs-v9"\n')
    with pytest.raises(ConfigError, match="pipeline"):
        load_settings(site, environ={})


def test_organs_rule_is_commented_out_of_the_defaults_and_valid_when_a_site_adds_it(
    tmp_path: Path,
) -> None:
    """The shipped organ model does not segment yet, so the embedded defaults route calcium
    only; the organs rule in config.toml, uncommented into a site file, is a valid rule."""
    assert [r.pipeline for r in load_settings(environ={}).routes] == ["calcium"]
    text = (Path(__file__).resolve().parents[3] / "config.toml").read_text()
    calcium = text[text.index("\n[[routes]]\n") : text.index("# Organ segmentation is not routed")]
    block = text[text.index('# [[routes]]\n# name = "chest-ct-organs"') :]
    organs = [line[2:] for line in block.splitlines()[:10]]
    site = tmp_path / "site.toml"
    site.write_text(calcium + "\n".join(organs) + "\n")
    routes = load_settings(site, environ={}).routes
    assert [(r.name, r.pipeline) for r in routes] == [
        ("chest-ct-calcium", "calcium"),
        ("chest-ct-organs", "organs"),
    ]
    assert routes[1].description_exclude == routes[0].description_exclude
    site.write_text('[[routes]]\nname = "x"\npipeline = "calcium"\nmodalities = "CT"\n')
    with pytest.raises(ConfigError, match="modalities"):
        load_settings(site, environ={})


def test_backoff_doubles_up_to_the_maximum() -> None:
    send = load_settings(environ={"CTNODE_SEND__BACKOFF_INITIAL_S": "10"}).send
    assert [send.backoff_s(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert send.backoff_s(20) == send.backoff_max_s
    with pytest.raises(ConfigError, match="backoff"):
        load_settings(environ={"CTNODE_SEND__BACKOFF_INITIAL_S": "9999"})
