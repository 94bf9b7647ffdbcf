"""deploy/ holds together without a Docker engine or systemd as PID 1.

Checked here: the Dockerfile (parsed by BuildKit's own parser, the `dockerfile` package): its
COPY sources exist and pass its .dockerignore, it runs as a non-root user, its HEALTHCHECK,
ENTRYPOINT and CMD are real `ctnode` commands and options; compose.yaml (PyYAML): every
`ctnode` service command is a real command, bind-mounted files exist and parse, named volumes
and networks are declared, dependencies name services; the site configurations load with the
environment each service or unit sets; Orthanc's modality entry, the node's peers and
destinations and the health check's `self` peer agree with each other; the systemd units have
their hardening keys and pass `systemd-analyze verify` where it is installed.

Not checked (no engine): that the images build and the containers start; see
docs/deployment.md, "What was validated".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import dockerfile
import pytest
import yaml

from node.config import load_settings
from tests.tools import REPO

DEPLOY = REPO / "deploy"
CTNODE_IMAGE_SERVICES = ("receiver", "worker")
UNITS = ("ctnode.service", "ctnode-receiver.service", "ctnode-worker.service")
EXEC_START = "/opt/ctnode/venv/bin/ctnode serve --config /etc/ctnode/site.toml"
TEST_SECRETS = {"CTNODE_DB_PASSWORD": "test-secret", "ORTHANC_ADMIN_PASSWORD": "test-secret"}


def ctnode_script() -> str:
    script = Path(sys.executable).parent / "ctnode"
    return str(script) if script.exists() else shutil.which("ctnode")


@cache
def ctnode_help(command: str) -> str:
    proc = subprocess.run(
        [ctnode_script(), command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert proc.returncode == 0, f"`ctnode {command}` is not a ctnode command: {proc.stderr}"
    return proc.stdout


def assert_real_ctnode_command(args: list[str]) -> None:
    """args after `ctnode`: the command exists and each --option is one of its options."""
    command, *rest = args
    help_text = ctnode_help(command)
    for option in (a.split("=")[0] for a in rest if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
            f"`ctnode {command}` has no option {option}"
        )


def interpolate(value: str) -> str:
    """Compose's ${VAR:?message} / ${VAR} with the test's values for the secrets."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: TEST_SECRETS[m.group(1)], value)


# --- Dockerfile ---------------------------------------------------------------------------


@cache
def instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DEPLOY / "Dockerfile"))


def test_dockerfile_copies_existing_files_that_the_dockerignore_lets_through():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*", "the ignore file starts from nothing"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [c for c in instructions() if c.cmd == "COPY" and not c.flags]
    assert copies
    for copy in copies:
        for source in copy.value[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in included, f"COPY {source}: excluded by .dockerignore"
    # pyproject's package data needs the top-level config.toml beside node/ (a symlink).
    sources = {s for c in copies for s in c.value[:-1]}
    assert {"pyproject.toml", "config.toml", "node", "models"} <= sources


def test_dockerfile_base_and_torch_are_build_arguments():
    args = dict(c.value[0].split("=", 1) for c in instructions() if c.cmd == "ARG")
    assert args["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    assert args["TORCH_INDEX"].endswith("/whl/cpu")
    froms = [c.value[0] for c in instructions() if c.cmd == "FROM"]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert any("${TORCH_INDEX}" in c.value[0] for c in instructions() if c.cmd == "RUN")


def test_container_runs_ctnode_as_a_non_root_user_with_a_health_check():
    users = [c.value[0] for c in instructions() if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    by_cmd = {c.cmd: c for c in instructions()}
    assert "/var/lib/ctnode" in by_cmd["VOLUME"].value
    entrypoint = list(by_cmd["ENTRYPOINT"].value)
    assert entrypoint == ["ctnode"]
    assert_real_ctnode_command(list(by_cmd["CMD"].value))
    health = list(by_cmd["HEALTHCHECK"].value)
    assert health[0] == "CMD" and health[1] == "ctnode"
    assert_real_ctnode_command(health[2:])


# --- compose.yaml -----------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_services_run_real_ctnode_commands():
    services = compose()["services"]
    assert set(CTNODE_IMAGE_SERVICES) | {"postgres", "orthanc"} <= set(services)
    for name in CTNODE_IMAGE_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / "deploy" / "Dockerfile").exists()
        # The image's ENTRYPOINT is ctnode, so the command is what follows it.
        assert_real_ctnode_command(list(service["command"]))


def test_compose_mounts_declared_volumes_and_existing_files():
    top = compose()
    for name, service in top["services"].items():
        for network in service.get("networks", []):
            assert network in top["networks"], f"{name}: network {network} not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in top["services"], f"{name}: depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).is_file(), f"{name}: {source} does not exist"
            else:
                assert source in top["volumes"], f"{name}: volume {source} not declared"


def service_settings(name: str):
    """The node's settings as the compose service gets them: the mounted site.toml plus
    the service's environment."""
    service = compose()["services"][name]
    (site,) = [m for m in service["volumes"] if m.split(":")[1] == "/etc/ctnode/site.toml"]
    environ = {k: interpolate(str(v)) for k, v in service["environment"].items()}
    return load_settings(DEPLOY / site.split(":")[0], environ=environ)


def test_compose_roles_share_one_postgresql_and_one_spool():
    receiver, worker = (service_settings(n) for n in CTNODE_IMAGE_SERVICES)
    assert not receiver.worker.enabled and worker.worker.enabled
    assert receiver.storage.database_url == worker.storage.database_url
    assert receiver.storage.database_url.startswith(
        "postgresql+psycopg://ctnode:test-secret@postgres/"
    )
    assert receiver.storage.spool_dir == worker.storage.spool_dir
    data_volume = {
        m.split(":")[1]: m.split(":")[0] for m in compose()["services"]["receiver"]["volumes"]
    }
    assert receiver.storage.spool_dir.is_relative_to(Path("/var/lib/ctnode"))
    assert data_volume["/var/lib/ctnode"] in compose()["volumes"]
    postgres = compose()["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "ctnode" and postgres["POSTGRES_DB"] == "ctnode"


def test_orthanc_forwards_to_the_receiver_and_the_node_answers_orthanc():
    services = compose()["services"]
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    settings = service_settings("receiver")
    # Orthanc's modality "ctnode" is the receiver: its AE title, service name and port.
    assert orthanc["DicomModalities"]["ctnode"] == [
        settings.node.ae_title,
        "receiver",
        settings.node.port,
    ]
    assert f"{settings.node.port}:{settings.node.port}" in services["receiver"]["ports"]
    # The node accepts Orthanc (allow-list) and sends its results back to it.
    peers = {p.name: p for p in settings.peers}
    destinations = {d.name: d for d in settings.destinations}
    for entry in (peers["orthanc"], destinations["orthanc"]):
        assert (entry.ae_title, entry.host, entry.port) == (
            orthanc["DicomAet"],
            "orthanc",
            orthanc["DicomPort"],
        )
    # The Lua rule is mounted where orthanc.json loads it, and names the modality entry.
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["orthanc"]["volumes"]}
    for script in orthanc["LuaScripts"]:
        lua = (DEPLOY / mounts[script]).read_text()
        assert "'/modalities/ctnode/store'" in lua and "function OnStableSeries" in lua
    assert mounts["/etc/orthanc/orthanc.json"] == "./orthanc/orthanc.json"
    assert "ORTHANC_ADMIN_PASSWORD" in services["orthanc"]["environment"]


def test_health_check_target_is_the_node_itself():
    health = next(c for c in instructions() if c.cmd == "HEALTHCHECK").value
    target = health[3]  # CMD ctnode echo TARGET ...
    for name in CTNODE_IMAGE_SERVICES:
        settings = service_settings(name)
        peer = next(p for p in settings.peers if p.name == target)
        assert (peer.ae_title, peer.host, peer.port) == (
            settings.node.ae_title,
            "127.0.0.1",
            settings.node.port,
        )


# --- systemd ------------------------------------------------------------------------------


def unit_entries(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, repeated keys kept (systemd allows them)."""
    entries, section = [], None
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_is_hardened_and_runs_the_venv_ctnode(unit: str):
    entries = unit_entries(unit)
    service = {k: v for s, k, v in entries if s == "Service"}
    assert service["ExecStart"] == EXEC_START
    assert_real_ctnode_command(shlex.split(EXEC_START)[1:])
    expected = {
        "Restart": "on-failure",
        "User": "ctnode",
        "Group": "ctnode",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/ctnode",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "WorkingDirectory": "/var/lib/ctnode",
    }
    assert {k: service.get(k) for k in expected} == expected
    # The environment the unit sets is made of real settings, and the example site
    # configuration loads with it.
    environ = dict(v.split("=", 1) for s, k, v in entries if k == "Environment")
    settings = load_settings(DEPLOY / "systemd" / "site.toml", environ=environ)
    assert settings.logging.format == "json"
    assert settings.storage.spool_dir.is_relative_to(Path(expected["ReadWritePaths"]))
    assert settings.results.outbox_dir.is_relative_to(Path(expected["ReadWritePaths"]))
    if unit == "ctnode-receiver.service":
        assert not settings.worker.enabled
    else:
        assert settings.worker.enabled


def test_sysusers_creates_the_units_user():
    lines = [
        line.split()
        for line in (DEPLOY / "systemd" / "ctnode.sysusers.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0][:2] == ["u", "ctnode"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path):
    """systemd-analyze verify in a scratch root (it needs no running systemd): the units load
    without an unknown key or bad value, and ExecStart's program exists there."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt package systemd; tests/run.sh installs it)")
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(DEPLOY / "systemd" / unit, units / unit)
    program = tmp_path / EXEC_START.split()[0].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)

    def verify(*names: str) -> str:
        proc = subprocess.run(
            [analyze, "verify", f"--root={tmp_path}", *names],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return (proc.stdout + proc.stderr).strip()

    # verify reports unknown keys and unparsable values as warnings with exit code 0, so
    # the output must be empty; a misspelt copy shows that it would not be.
    assert verify(*UNITS) == ""
    broken = (units / "ctnode.service").read_text().replace("ProtectHome=", "ProtectHom=")
    (units / "broken.service").write_text(broken)
    assert "Unknown key 'ProtectHom'" in verify("broken.service")
