"""Typed settings: the embedded config.toml, an optional file on top, environment overrides.

Precedence (last wins): the defaults in the repository's config.toml, the file given with
--config, then environment variables CTNODE_<SECTION>__<KEY>. Unknown sections or keys and
values of the wrong type are errors at start, not surprises later.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
ENV_PREFIX = "CTNODE_"


class ConfigError(ValueError):
    """A configuration problem, with the section and key it concerns."""


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path
    seed: int
    category: int

    def __post_init__(self) -> None:
        if not 0 <= self.category <= 4:
            raise ConfigError(f"demo.category must be 0-4, got {self.category}")


@dataclass(frozen=True)
class AssemblySettings:
    missing_slices: str = "refuse"
    allow_reformats: bool = False

    def __post_init__(self) -> None:
        if self.missing_slices not in ("refuse", "resample"):
            raise ConfigError(
                f"assembly.missing_slices must be 'refuse' or 'resample', got {self.missing_slices!r}"
            )


@dataclass(frozen=True)
class Settings:
    demo: DemoSettings
    assembly: AssemblySettings


SECTIONS = {"demo": DemoSettings, "assembly": AssemblySettings}


def _merge(base: dict, extra: dict) -> dict:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _coerce(raw: str, like: Any, name: str) -> Any:
    try:
        if isinstance(like, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(like, int):
            return int(raw)
        if isinstance(like, float):
            return float(raw)
    except ValueError as error:
        raise ConfigError(f"{name}: cannot read {raw!r} as {type(like).__name__}") from error
    return raw


def _env_overrides(values: dict, environ: dict[str, str]) -> dict:
    out: dict[str, dict] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in values or key not in values[section]:
            raise ConfigError(f"{name}: no setting [{section}] {key}")
        out.setdefault(section, {})[key] = _coerce(raw, values[section][key], name)
    return out


def _build(values: dict) -> Settings:
    built = {}
    for section, cls in SECTIONS.items():
        given = values.get(section, {})
        known = {f.name: f for f in fields(cls)}
        unknown = set(given) - set(known)
        if unknown:
            raise ConfigError(f"[{section}]: unknown keys {sorted(unknown)}")
        missing = set(known) - set(given)
        if missing:
            raise ConfigError(f"[{section}]: missing keys {sorted(missing)}")
        converted = {k: Path(v) if known[k].type in ("Path", Path) else v for k, v in given.items()}
        built[section] = cls(**converted)
    unknown_sections = set(values) - set(SECTIONS)
    if unknown_sections:
        raise ConfigError(f"unknown sections {sorted(unknown_sections)}")
    return Settings(**built)


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from the embedded defaults, an optional TOML file and the environment."""
    values = tomllib.loads(DEFAULT_CONFIG.read_text())
    if path is not None:
        try:
            values = _merge(values, tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: {error}") from error
    env = os.environ if environ is None else environ
    return _build(_merge(values, _env_overrides(values, dict(env))))
