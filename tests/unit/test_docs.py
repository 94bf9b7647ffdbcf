"""The documentation holds together: links resolve, the README stays short, and
docs/configuration.md lists exactly the keys of config.toml.

Docs checked: README.md, docs/**/*.md, training/*/results/README.md and the model cards
models/weights/*.md. A relative link (text or image) must name a file of the repository, and an
#anchor must be a heading of the target markdown file (GitHub's heading slugs). No doc may
cite a file that is not in the repository (the design and reference documents the project
started from live outside it); ../shared/data/real, the real CT the tests read, is the one
outside path a doc may name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from node.config import LIST_SECTIONS, SECTIONS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
README_MAX_BYTES = 10 * 1024
QUICK_START = ("bash deploy/install.sh && .venv/bin/ctnode demo", "bash tests/run.sh")


def doc_files() -> list[Path]:
    files = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted(ROOT.glob("training/*/results/README.md"))
    files += sorted((ROOT / "models" / "weights").glob("*.md"))
    return files


def prose(text: str) -> str:
    """The text without fenced code blocks (commands and sample output are not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_docs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    for required in (
        "docs/architecture.md",
        "docs/configuration.md",
        "docs/operations.md",
        "docs/conformance.md",
        "docs/benchmarks.md",
        "docs/CHANGELOG.md",
        "docs/models/calcium.md",
        "docs/models/organs.md",
    ):
        assert required in names


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc.read_text()):
        if re.match(r"^(https?|mailto):", target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_citation_outside_the_repository(doc: Path):
    text = doc.read_text()
    cited = re.findall(r"\b(?:DESIGN|REFERENCE)\.md\b", text)
    cited += [
        path
        for path in re.findall(r"\.\./shared/[\w./-]*", text)
        if not path.startswith("../shared/data/real")
    ]
    assert not cited, f"{doc.relative_to(ROOT)} cites files outside the repository: {cited}"


def test_readme_is_short_and_keeps_the_quick_start():
    text = README.read_text()
    assert len(README.read_bytes()) <= README_MAX_BYTES
    for command in QUICK_START:
        assert command in text


# --- docs/configuration.md against config.toml ------------------------------------------------


def documented_keys() -> dict[str, dict[str, str]]:
    """{section: {key: default cell}} from the tables of docs/configuration.md; a section is
    a heading like ## `[node]` or ## `[[peers]]`, a key the first cell of a table row."""
    sections: dict[str, dict[str, str]] = {}
    section = None
    for line in CONFIG_DOC.read_text().splitlines():
        heading = re.match(r"^#{2,3} `\[\[?([a-z_]+)\]\]?`\s*$", line)
        if heading:
            section = heading.group(1)
            sections[section] = {}
            continue
        row = re.match(r"^\| `([a-z_]+)` \| (.*?) \|", line)
        if row and section is not None:
            assert row.group(1) not in sections[section], f"[{section}] {row.group(1)} twice"
            sections[section][row.group(1)] = row.group(2).strip().strip("`")
    return sections


def config_toml_keys() -> dict[str, dict[str, object]]:
    """{section: {key: value}} of config.toml, arrays of tables included (keys of all their
    entries), and so are its commented-out example blocks (`# [[destinations]]` followed by
    `# key = value` lines), which document the keys of lists that are empty by default."""
    text = (ROOT / "config.toml").read_text()
    keys: dict[str, dict[str, object]] = {}
    for section, value in tomllib.loads(text).items():
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            keys.setdefault(section, {}).update(entry)
    for block in re.findall(r"^# \[\[\w+\]\]\n(?:# \w+ = .*\n)+", text, flags=re.M):
        example = tomllib.loads(re.sub(r"^# ", "", block, flags=re.M))
        for section, entries in example.items():
            for entry in entries:
                keys.setdefault(section, {}).update(entry)
    return keys


def test_configuration_doc_lists_every_key_of_config_toml():
    documented = documented_keys()
    missing = [
        f"[{section}] {key}"
        for section, values in config_toml_keys().items()
        for key in values
        if key not in documented.get(section, {})
    ]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_configuration_doc_lists_no_key_config_toml_lacks():
    in_file = config_toml_keys()
    extra = []
    for section, keys in documented_keys().items():
        if section in SECTIONS:
            known = set(in_file.get(section, {}))
        elif section in LIST_SECTIONS:
            # An entry of a list may leave out optional keys, so config.toml need not show
            # them (e.g. a peer's complete_after_s); the node must still know them.
            known = {f.name for f in fields(LIST_SECTIONS[section])}
        else:
            known = set()
        extra += [f"[{section}] {key}" for key in keys if key not in known]
    assert not extra, f"docs/configuration.md lists keys config.toml lacks: {extra}"


def test_configuration_doc_covers_every_setting_of_the_node():
    documented = documented_keys()
    missing = [
        f"[{section}] {f.name}"
        for section, settings in {**SECTIONS, **LIST_SECTIONS}.items()
        for f in fields(settings)
        if f.name not in documented.get(section, {})
    ]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_configuration_doc_defaults_match():
    documented = documented_keys()
    in_file = config_toml_keys()
    wrong = []
    for section in SECTIONS:
        for key, cell in documented.get(section, {}).items():
            if tomllib.loads(f"v = {cell}")["v"] != in_file[section][key]:
                wrong.append(
                    f"[{section}] {key}: doc {cell}, config.toml {in_file[section][key]!r}"
                )
    for f in fields(LIST_SECTIONS["routes"]):
        cell = documented["routes"][f.name]
        if f.default is MISSING:
            assert cell == "(required)", f"[[routes]] {f.name} is required"
        elif tomllib.loads(f"v = {cell}")["v"] != (
            list(f.default) if isinstance(f.default, tuple) else f.default
        ):
            wrong.append(f"[[routes]] {f.name}: doc {cell}, node default {f.default!r}")
    assert not wrong, "; ".join(wrong)
