"""Typed settings: the embedded config.toml, an optional file on top, environment overrides.

Precedence (last wins): the defaults in the repository's config.toml (package data of `node`,
read through importlib.resources, so an installed wheel finds it too), the file given with
--config, then environment variables CTNODE_<SECTION>__<KEY>. Unknown sections or keys and
values of the wrong type are errors at start, not surprises later.

Arrays of tables ([[peers]], [[destinations]]) are replaced whole by a file that defines them
(a site lists all its peers, it does not patch the defaults' list), and they cannot be changed
from the environment: there is no unambiguous way to address one entry of a list by name.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

# node/config.toml links to the top-level config.toml in a checkout; a wheel holds the file.
DEFAULT_CONFIG = resources.files("node") / "config.toml"
ENV_PREFIX = "CTNODE_"


class ConfigError(ValueError):
    """A configuration problem, with the section and key it concerns."""


def check_ae_title(value: str, key: str) -> None:
    """PS3.5 AE title: 1-16 characters of the default repertoire, no backslash or control
    characters, not only spaces."""
    if not value.strip() or len(value) > 16:
        raise ConfigError(f"{key}: an AE title has 1-16 characters, got {value!r}")
    if any(ch == "\\" or not (" " <= ch <= "~") for ch in value):
        raise ConfigError(f"{key}: an AE title has printable ASCII without '\\', got {value!r}")


def check_port(value: int, key: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{key}: a TCP port is {low}-65535, got {value}")


def check_host(value: str, key: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise ConfigError(f"{key}: a host name or IP address is required, got {value!r}")


def check_remote(remote: PeerSettings | DestinationSettings, key: str) -> None:
    """A peer's or destination's AE title, host and port."""
    check_ae_title(remote.ae_title, f"{key}.ae_title")
    check_host(remote.host, f"{key}.host")
    check_port(remote.port, f"{key}.port")


def check_positive(settings: object, section: str, *keys: str) -> None:
    """ConfigError naming `section.key` for the first of `keys` whose value is not > 0."""
    for key in keys:
        value = getattr(settings, key)
        if value <= 0:
            raise ConfigError(f"{section}.{key} must be > 0, got {value}")


def check_at_least(settings: object, section: str, minimum: int, *keys: str) -> None:
    """ConfigError naming `section.key` for the first of `keys` below `minimum`."""
    for key in keys:
        value = getattr(settings, key)
        if value < minimum:
            raise ConfigError(f"{section}.{key} must be >= {minimum}, got {value}")


def check_device(value: str, key: str) -> None:
    """A torch device name as the configuration writes it."""
    if value not in ("auto", "cpu") and not value.startswith("cuda"):
        raise ConfigError(f"{key}: auto, cpu or cuda[:N], got {value!r}")


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path
    seed: int
    category: int
    complete_after_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.category <= 4:
            raise ConfigError(f"demo.category must be 0-4, got {self.category}")
        check_positive(self, "demo", "complete_after_s")


@dataclass(frozen=True)
class NodeSettings:
    ae_title: str
    port: int
    bind: str
    max_associations: int
    accept_unknown_peers: bool
    check_peer_host: bool
    network_timeout_s: float

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "node.ae_title")
        # Port 0 asks the operating system for a free port (tests use it).
        check_port(self.port, "node.port", allow_zero=True)
        try:
            ipaddress.ip_address(self.bind)
        except ValueError as error:
            raise ConfigError(f"node.bind: an IP address, got {self.bind!r}") from error
        check_at_least(self, "node", 1, "max_associations")
        check_positive(self, "node", "network_timeout_s")


@dataclass(frozen=True)
class StorageSettings:
    spool_dir: Path
    database_url: str
    min_free_mb: int
    max_instance_mb: int

    def __post_init__(self) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(self.database_url)
        except ArgumentError as error:
            raise ConfigError(f"storage.database_url: {error}") from error
        check_at_least(self, "storage", 0, "min_free_mb")
        check_at_least(self, "storage", 1, "max_instance_mb")


@dataclass(frozen=True)
class SeriesSettings:
    complete_after_s: float
    check_interval_s: float

    def __post_init__(self) -> None:
        check_positive(self, "series", "complete_after_s", "check_interval_s")


@dataclass(frozen=True)
class WorkerSettings:
    """The job worker: claims, heartbeats, automatic retries of transient failures."""

    enabled: bool
    poll_s: float
    heartbeat_s: float
    stale_after_s: float
    max_attempts: int
    retry_after_s: float

    def __post_init__(self) -> None:
        check_positive(self, "worker", "poll_s", "heartbeat_s", "retry_after_s")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ConfigError(
                f"worker.stale_after_s ({self.stale_after_s}) must exceed twice "
                f"worker.heartbeat_s ({self.heartbeat_s}), or live jobs look abandoned"
            )
        check_at_least(self, "worker", 1, "max_attempts")


HEART_CHECKS = ("registration", "organs")


@dataclass(frozen=True)
class CalciumSettings:
    """The calcium pipeline's model: where its weights are and which device runs it."""

    weights_dir: str  # "" means the weights shipped in models/weights
    device: str
    min_slices: int
    # Where the "heart outside the field of view" evidence comes from: "registration" (the
    # calcium model's own atlas registration, free) or "organs" (also segment the organs and
    # flag heart_not_in_field_of_view when the heart is missing or cut; shared with an organs
    # job of the same series in this worker, so the segmentation runs once).
    heart_check: str = "registration"

    def __post_init__(self) -> None:
        check_device(self.device, "calcium.device")
        check_at_least(self, "calcium", 1, "min_slices")
        if self.heart_check not in HEART_CHECKS:
            raise ConfigError(
                f"calcium.heart_check: one of {list(HEART_CHECKS)}, got {self.heart_check!r}"
            )

    def weights_path(self) -> Path:
        from models.calcium.inference import WEIGHTS_DIR

        return Path(self.weights_dir) if self.weights_dir else WEIGHTS_DIR


@dataclass(frozen=True)
class OrgansSettings:
    """The organs pipeline's segmentation model (models.organs.registry) and its device."""

    models_dir: Path  # imported models, one folder per model name
    model: str  # "" means the shipped base model (models/weights/organs_base.json)
    device: str
    min_slices: int = 16

    def __post_init__(self) -> None:
        check_device(self.device, "organs.device")
        check_at_least(self, "organs", 1, "min_slices")

    def spec_path(self) -> Path:
        """The JSON spec of the configured model (registry.ModelFileError when absent)."""
        from models.organs.registry import find

        return find(self.model or None, self.models_dir)


@dataclass(frozen=True)
class ResultsSettings:
    secondary_capture: bool
    outbox_dir: Path


@dataclass(frozen=True)
class SendSettings:
    """C-STORE of results: retry policy and timeouts."""

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    timeout_s: float
    check_interval_s: float

    def __post_init__(self) -> None:
        check_at_least(self, "send", 1, "max_attempts")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError(
                "send.backoff_initial_s must be > 0 and <= send.backoff_max_s, got "
                f"{self.backoff_initial_s} and {self.backoff_max_s}"
            )
        check_positive(self, "send", "timeout_s", "check_interval_s")

    def backoff_s(self, attempts: int) -> float:
        """Wait after the attempts-th failed try: initial, 2x, 4x, ... capped at the maximum."""
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, attempts - 1))


PIPELINES = ("calcium", "organs")


@dataclass(frozen=True)
class RouteSettings:
    """One routing rule: a series that passes every test gets a job of `pipeline`.

    Tests are on the header of the series' first instance and on its instance count. The
    node's own outputs and localizers never pass, whatever a rule says.
    """

    name: str
    pipeline: str
    modalities: tuple[str, ...] = ("CT",)
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    min_slice_thickness_mm: float = 0.5
    max_slice_thickness_mm: float = 5.0
    min_instances: int = 16
    description_include: tuple[str, ...] = ()
    description_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        key = f"routes[{self.name}]"
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"{key}.pipeline: one of {list(PIPELINES)}, got {self.pipeline!r}")
        if not 0 <= self.min_slice_thickness_mm <= self.max_slice_thickness_mm:
            raise ConfigError(
                f"{key}: need 0 <= min_slice_thickness_mm <= max_slice_thickness_mm, got "
                f"{self.min_slice_thickness_mm} and {self.max_slice_thickness_mm}"
            )
        check_at_least(self, key, 1, "min_instances")


@dataclass(frozen=True)
class PeerSettings:
    """A sender the node accepts associations from (the allow-list)."""

    name: str
    ae_title: str
    host: str
    port: int
    complete_after_s: float | None = None
    # The peer must associate over TLS ([tls] listener); its associations on the plain port
    # are rejected.
    tls: bool = False

    def __post_init__(self) -> None:
        key = f"peers[{self.name}]"
        check_remote(self, key)
        if self.complete_after_s is not None:
            check_positive(self, key, "complete_after_s")


@dataclass(frozen=True)
class DestinationSettings:
    """A DICOM node results are sent to (C-STORE SCP)."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False  # associate over TLS (node.tls), verifying the destination's certificate

    def __post_init__(self) -> None:
        check_remote(self, f"destinations[{self.name}]")


@dataclass(frozen=True)
class AssemblySettings:
    missing_slices: str = "refuse"
    allow_reformats: bool = False

    def __post_init__(self) -> None:
        if self.missing_slices not in ("refuse", "resample"):
            raise ConfigError(
                f"assembly.missing_slices must be 'refuse' or 'resample', got {self.missing_slices!r}"
            )


TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 8080
    token: str = ""

    def __post_init__(self) -> None:
        check_port(self.port, "http.port", allow_zero=True)
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError as error:
            raise ConfigError(f"http.bind: an IP address, got {self.bind!r}") from error
        if self.token and (
            len(self.token) < MIN_TOKEN_LENGTH or not TOKEN_CHARACTERS.fullmatch(self.token)
        ):
            raise ConfigError(
                f"http.token: at least {MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 . _ ~ + / = -"
            )
        # The page shows study and series UIDs and the job log: beyond this machine, only
        # with a token.
        if self.enabled and not address.is_loopback and not self.token:
            raise ConfigError(
                f"http.bind {self.bind} is not a loopback address: set [http] token too "
                "(every request must then carry it)"
            )


@dataclass(frozen=True)
class RetentionSettings:
    """How long delivered series are kept (node.retention); 0 keeps everything forever."""

    keep_days: float = 7
    check_interval_s: float = 3600

    def __post_init__(self) -> None:
        if self.keep_days < 0:
            raise ConfigError(f"retention.keep_days must be >= 0, got {self.keep_days}")
        if self.check_interval_s <= 0:
            raise ConfigError(
                f"retention.check_interval_s must be > 0, got {self.check_interval_s}"
            )


@dataclass(frozen=True)
class TlsSettings:
    """DICOM over TLS (node.tls): the TLS listener, and the files TLS associations use both
    ways (the node's certificate and key, the CA that signs peers' and destinations')."""

    enabled: bool = False
    port: int = 2762
    certificate: str = ""
    key: str = ""
    ca: str = ""
    require_client_cert: bool = True

    def __post_init__(self) -> None:
        check_port(self.port, "tls.port", allow_zero=True)
        if self.enabled and not (self.certificate and self.key):
            raise ConfigError("tls.enabled needs tls.certificate and tls.key (PEM files)")
        if self.enabled and self.require_client_cert and not self.ca:
            raise ConfigError(
                "tls.require_client_cert needs tls.ca, the CA that signs the peers' certificates"
            )


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LoggingSettings:
    """How `ctnode serve` writes its log: text lines on stderr (a terminal) or JSON lines on
    stdout (journald, container runtimes and log shippers)."""

    format: str = "text"

    def __post_init__(self) -> None:
        if self.format not in LOG_FORMATS:
            raise ConfigError(f"logging.format: one of {list(LOG_FORMATS)}, got {self.format!r}")


@dataclass(frozen=True)
class Settings:
    demo: DemoSettings
    node: NodeSettings
    storage: StorageSettings
    series: SeriesSettings
    worker: WorkerSettings
    calcium: CalciumSettings
    organs: OrgansSettings
    results: ResultsSettings
    send: SendSettings
    peers: tuple[PeerSettings, ...]
    destinations: tuple[DestinationSettings, ...]
    routes: tuple[RouteSettings, ...]
    assembly: AssemblySettings
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    retention: RetentionSettings = RetentionSettings()
    tls: TlsSettings = TlsSettings()

    def __post_init__(self) -> None:
        tls_peers = [peer.name for peer in self.peers if peer.tls]
        if tls_peers and not self.tls.enabled:
            raise ConfigError(
                f"[[peers]] {tls_peers} have tls = true but [tls] enabled is false: "
                "they could not associate at all"
            )

    def peer_by_ae_title(self, ae_title: str) -> PeerSettings | None:
        """The configured peer with this AE title (trailing spaces ignored, as DICOM pads)."""
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title.strip() == wanted), None)

    def complete_after_s_for(self, sender_ae: str) -> float:
        """Idle time after which a series from this sender counts as complete."""
        peer = self.peer_by_ae_title(sender_ae)
        if peer is not None and peer.complete_after_s is not None:
            return peer.complete_after_s
        return self.series.complete_after_s


SECTIONS: dict[str, type] = {
    "demo": DemoSettings,
    "node": NodeSettings,
    "storage": StorageSettings,
    "series": SeriesSettings,
    "worker": WorkerSettings,
    "calcium": CalciumSettings,
    "organs": OrgansSettings,
    "results": ResultsSettings,
    "send": SendSettings,
    "assembly": AssemblySettings,
    "http": HttpSettings,
    "logging": LoggingSettings,
    "retention": RetentionSettings,
    "tls": TlsSettings,
}
LIST_SECTIONS: dict[str, type] = {
    "peers": PeerSettings,
    "destinations": DestinationSettings,
    "routes": RouteSettings,
}


def _merge(base: dict, extra: dict) -> dict:
    merged = {
        section: dict(values) if isinstance(values, dict) else values
        for section, values in base.items()
    }
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values  # arrays of tables (and type errors, caught later)
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
        if section in LIST_SECTIONS:
            raise ConfigError(
                f"{name}: [[{section}]] entries cannot be set from the environment; "
                "list them in a --config file"
            )
        if section not in values or key not in values[section]:
            raise ConfigError(f"{name}: no setting [{section}] {key}")
        out.setdefault(section, {})[key] = _coerce(raw, values[section][key], name)
    return out


def _matches(value: Any, expected: Any) -> bool:
    """Whether a TOML value fits a dataclass field type (int, float, str, bool, Path, X | None)."""
    if isinstance(expected, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if typing.get_origin(expected) is tuple:  # tuple[str, ...]: a TOML array of strings
        (member, _ellipsis) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(v, member) for v in value)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:  # TOML writes 60 for 60.0; accept integers for float settings
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected in (str, Path):
        return isinstance(value, str)
    return isinstance(value, expected)


def _build_section(cls: type, given: Any, where: str) -> Any:
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: expected a table of keys, got {type(given).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = set(given) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    missing = {n for n, f in known.items() if f.default is MISSING and n not in given}
    if missing:
        raise ConfigError(f"{where}: missing keys {sorted(missing)}")
    converted = {}
    for key, value in given.items():
        expected = hints[key]
        if not _matches(value, expected):
            name = getattr(expected, "__name__", str(expected))
            raise ConfigError(f"{where} {key}: expected {name}, got {value!r}")
        if expected is Path:
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        converted[key] = value
    return cls(**converted)


def _build_list(cls: type, given: Any, section: str) -> tuple:
    if not isinstance(given, list):
        raise ConfigError(f"[[{section}]]: expected an array of tables ([[{section}]] blocks)")
    built = tuple(
        _build_section(cls, entry, f"[[{section}]] #{i + 1}") for i, entry in enumerate(given)
    )
    names = [entry.name for entry in built]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"[[{section}]]: names must be unique, repeated {duplicates}")
    return built


def _build(values: dict) -> Settings:
    unknown_sections = set(values) - set(SECTIONS) - set(LIST_SECTIONS)
    if unknown_sections:
        raise ConfigError(f"unknown sections {sorted(unknown_sections)}")
    built: dict[str, Any] = {
        section: _build_section(cls, values.get(section, {}), f"[{section}]")
        for section, cls in SECTIONS.items()
    }
    for section, cls in LIST_SECTIONS.items():
        built[section] = _build_list(cls, values.get(section, []), section)
    ae_titles = [peer.ae_title.strip() for peer in built["peers"]]
    repeated = sorted({t for t in ae_titles if ae_titles.count(t) > 1})
    if repeated:
        # The allow-list and the per-peer timeout look peers up by calling AE title.
        raise ConfigError(f"[[peers]]: AE titles must be unique, repeated {repeated}")
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
