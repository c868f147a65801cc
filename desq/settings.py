"""Settings: one declared schema, loaded once from TOML and ``DESQ_*`` variables.

Every key is a field of a frozen dataclass below, with its type, default and one-line meaning
(CONTRACT section 2). ``load_settings`` reads the TOML file named by ``--config`` or
``DESQ_CONFIG``, lets ``DESQ_<SECTION>_<KEY>`` variables override any scalar (and list) key, and
stops with a one-line ``SettingsError`` naming the key on anything unknown or malformed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from desq import layout
from desq.errors import DesqError
from desq.failpoints import FAILPOINTS_DIR_ENV, FAILPOINTS_ENV
from desq.mode import mode_for
from desq.s3 import config as s3_config
from desq.settings_checks import (
    ec_code, hide_password,
    check_archive_url, check_backends, check_broker_url, check_db_url, check_nodes, check_nonempty, check_optional_db_url, check_optional_http_url, check_original_url, check_prefix, check_tokens, check_zone,
)

ENV_PREFIX = "DESQ_"
CONFIG_ENV = "DESQ_CONFIG"
# DESQ_* variables that are not settings; any other unknown DESQ_* variable is an error,
# so that a misspelt override never goes unnoticed.
NON_SETTING_ENV = frozenset({CONFIG_ENV, "DESQ_DEBUG", FAILPOINTS_ENV, FAILPOINTS_DIR_ENV})


class SettingsError(DesqError):
    """A configuration key that is unknown, or a value that is missing or malformed."""


def opt(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    min: int | None = None,
    max: int | None = None,
    check: Callable[[Any], None] | None = None,
    secret: bool = False,
) -> Any:
    """Declare one setting: its default, meaning and constraints (kept in field metadata)."""
    meta = dict(help=help, choices=choices, min=min, max=max, check=check, secret=secret)
    return field(default=default, metadata=meta)


# --- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnSettings:
    """Names of the business table's own columns."""

    id: str = opt("id", "the row's unique id (name mode: part of the name; uid mode: the uid)", check=check_nonempty)
    created_at: str = opt("created_at", "when the file was created", check=check_nonempty)
    path: str = opt("path", "the original file: a local path or s3://bucket/key", check=check_nonempty)
    des_name: str = opt("des_name", "name mode: the name the marker gives", check=check_nonempty)
    des_shard: str = opt("des_hash_bits", "name mode: the shard of that name, an integer", check=check_nonempty)
    des_status: str = opt("des_status", "name mode: NULL, READY or PACKED", check=check_nonempty)


@dataclass(frozen=True)
class SourceSettings:
    """The business application's table of files."""

    db_url: str = opt("sqlite:///desq-data/source.db", "SQLAlchemy URL of the source database", check=check_db_url, secret=True)
    table: str = opt("files", "the source table (schema.table allowed)", check=check_nonempty)
    root: str = opt("", "prefix for relative paths in the path column")
    uid_kind: str = opt("int", "uid mode: int (shard = uid % 2**bits) or text (CRC32)", choices=("int", "text"))
    name_prefix: str = opt("", "name mode: optional [A-Za-z0-9-]+ prefix of the names the marker gives", check=check_prefix)
    s3_endpoint_url: str = opt("", "S3 endpoint for s3:// originals; empty: archive.s3_endpoint_url", check=check_optional_http_url)
    batch_size: int = opt(1000, "rows the marker reads and updates per transaction", min=1, max=100_000)
    fetch_threads: int = opt(32, "originals fetched at once by one packer (S3 GETs wait on the network; local files in the page cache are read inline)", min=1, max=256)
    columns: ColumnSettings = field(default_factory=ColumnSettings)


@dataclass(frozen=True)
class ArchiveSettings:
    """Where containers are stored and when files go into them."""

    url: str = opt("desq-data/archive", "a local folder (path or file:///abs/path), s3://bucket/prefix, or ec://K+M over archive.nodes", check=check_archive_url)
    s3_endpoint_url: str = opt("", "S3 endpoint for Ceph RGW, MinIO or a test server; empty for AWS", check=check_optional_http_url)
    nodes: tuple[str, ...] = opt((), "ec://K+M: exactly K+M node locations, folders or s3://bucket/prefix[?endpoint=http://host:port]", check=check_nodes)
    after_days: int = opt(7, "a file is archived once it is this many days old", min=0, max=36500)
    delete_originals: bool = opt(False, "delete originals, only ever after the container is verified")
    big_file_bytes: int = opt(64 * 1024 * 1024, "files this large or larger are stored beside the container", min=1, max=5 * 1024**4)


@dataclass(frozen=True)
class StateSettings:
    """desq's own small tables (the uid-mode cutoff, packer leases)."""

    db_url: str = opt("", "SQLAlchemy URL for desq's own tables; empty: the source database", check=check_optional_db_url, secret=True)


@dataclass(frozen=True)
class PipelineSettings:
    """The packers."""

    lease_seconds: int = opt(60, "a packer's lease on its (date, shard), renewed every third of it; a killed packer's lease frees after this, and its task is tried again then", min=5, max=86400)


@dataclass(frozen=True)
class BrokerSettings:
    """The Celery broker and result backend."""

    url: str = opt("", "empty: the embedded broker under data_dir; production: redis://host:6379/0", check=check_broker_url, secret=True)
    result_backend: str = opt("", "empty: the broker's Redis, or a folder under data_dir for the embedded broker", check=check_broker_url, secret=True)


@dataclass(frozen=True)
class WebSettings:
    """The files API and the router."""

    backends: tuple[str, ...] = opt((), "router: base URLs of files-API instances", check=check_backends)
    api_tokens: tuple[str, ...] = opt((), 'when non-empty, every /files request needs "Authorization: Bearer <token>"', check=check_tokens, secret=True)
    cache_max_age: int = opt(86400, "seconds a file answer stays fresh in caches (Cache-Control max-age; a member never changes under its ETag)", min=0, max=2**31)
    original_url: str = opt("", 'uid mode: where reads of not-yet-archived files go, e.g. "s3://live/{uid}"', check=check_original_url)
    index_cache_bytes: int = opt(256 << 20, "memory for cached container indexes, per files-API worker process", min=0, max=1 << 40)
    registry_url: str = opt("", "redis://... where files-API instances announce themselves to routers; empty: only web.backends", check=check_broker_url)
    advertise_url: str = opt("", "files API: the base URL under which this instance announces itself in the registry", check=check_optional_http_url)
    health_interval: int = opt(5, "router: seconds between health checks of each backend", min=1, max=3600)
    index_cache_url: str = opt("", "redis://... for a cache of indexes shared by all workers; empty: none", check=check_broker_url)


@dataclass(frozen=True)
class S3Settings:
    """The read-only S3-compatible API (``--role s3``)."""

    bucket: str = opt("desq", "the name under which the s3 role serves the archive as one bucket", check=s3_config.check_bucket)
    credentials: tuple[str, ...] = opt((), 'the s3 role\'s ["ACCESS_KEY_ID:SECRET_ACCESS_KEY", ...]; empty: anonymous reads', check=s3_config.check_credentials, secret=True)
    region: str = opt("us-east-1", "the region S3 clients sign their requests for", check=s3_config.check_region)

    def secrets(self) -> dict[str, str]:
        """Access key id -> secret access key."""
        return dict(entry.partition(":")[::2] for entry in self.credentials)


@dataclass(frozen=True)
class Settings:
    """Every setting of one desq deployment."""

    mode: str = opt("name", "name (the marker writes names into the source table) or uid", choices=("name", "uid"))
    shard_bits: int = opt(8, "shards per date are 2**shard_bits", min=layout.MIN_SHARD_BITS, max=layout.MAX_SHARD_BITS)
    queue_count: int = opt(4, "per-range packer queues; a power of two <= 2**shard_bits", min=1, max=1 << layout.MAX_SHARD_BITS)
    timezone: str = opt("UTC", "zone in which a created_at falls on a date; also the zone of created_at without an offset", check=check_zone)
    data_dir: str = opt("desq-data", "folder for the embedded default's broker messages, results and local state", check=check_nonempty)
    source: SourceSettings = field(default_factory=SourceSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    state: StateSettings = field(default_factory=StateSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    s3: S3Settings = field(default_factory=S3Settings)

    @cached_property
    def zone(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)

    @cached_property
    def layout(self) -> layout.Layout:
        """The layout these settings describe."""
        return layout.Layout(
            mode=typing.cast(layout.Mode, self.mode),
            shard_bits=self.shard_bits,
            queue_count=self.queue_count,
            zone=self.zone,
            uid_kind=typing.cast(layout.UidKind, self.source.uid_kind),
            name_prefix=self.source.name_prefix,
        )


# --- walking the schema ----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One leaf of the schema, flattened: ``source.columns.id`` and what it accepts."""

    key: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...]
    min: int | None
    max: int | None
    check: Callable[[Any], None] | None
    secret: bool

    @property
    def env(self) -> str:
        """The variable that overrides this key, e.g. ``DESQ_SOURCE_DB_URL``."""
        return ENV_PREFIX + self.key.replace(".", "_").upper()


def _walk(cls: type, prefix: str = "") -> Iterator[Option]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(kind):
            yield from _walk(kind, key + ".")
            continue
        meta = f.metadata
        yield Option(
            key=key,
            kind=tuple if typing.get_origin(kind) is tuple else kind,
            default=f.default,
            help=meta["help"],
            choices=meta["choices"],
            min=meta["min"],
            max=meta["max"],
            check=meta["check"],
            secret=meta["secret"],
        )


SCHEMA: tuple[Option, ...] = tuple(_walk(Settings))
"""Every setting, flattened, in declaration order."""

_SECTIONS = frozenset(o.key.rsplit(".", 1)[0] for o in SCHEMA if "." in o.key)
_BY_KEY = {o.key: o for o in SCHEMA}
_BY_ENV = {o.env: o for o in SCHEMA}


# --- loading ---------------------------------------------------------------------------------

_TYPE_WORDS = {str: "a string", int: "an integer", bool: "a boolean", tuple: "a list of strings"}


def _describe(value: Any, secret: bool = False) -> str:
    """How an error names a value it refuses; a secret's value is never shown, only its type."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "a list"
    return _TYPE_WORDS.get(type(value), f"a {type(value).__name__}") if secret else f"{type(value).__name__} {value!r}"


def _from_toml(option: Option, value: Any) -> Any:
    kind = option.kind
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected {_TYPE_WORDS[tuple]}, got {_describe(value, option.secret)}")
        return tuple(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"expected an integer, got {_describe(value, option.secret)}")
    if kind is not int and not isinstance(value, kind):
        raise ValueError(f"expected {_TYPE_WORDS[kind]}, got {_describe(value, option.secret)}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(option: Option, text: str) -> Any:
    kind = option.kind
    if kind is str:
        return text
    if kind is int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
            raise ValueError(f"expected an integer, got {text!r}")
        return int(text)
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"expected true or false, got {text!r}")
    # a list: a JSON array of strings, or comma-separated items
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            shown = "" if option.secret else f": {text!r}"
            raise ValueError(f"is not a JSON array of strings{shown}") from None
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError("expected a JSON array of strings")
        return tuple(items)
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _validate(option: Option, value: Any) -> None:
    if option.choices and value not in option.choices:
        raise ValueError(f"must be one of {', '.join(option.choices)}; got {value!r}")
    if option.min is not None and value < option.min or option.max is not None and value > option.max:
        raise ValueError(f"must be between {option.min} and {option.max}, got {value}")
    if option.check:
        option.check(value)


def _flatten(table: Mapping[str, Any], origin: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = prefix + name
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise SettingsError(f"{origin}: [{key}] must be a table, got {_describe(value)}")
            flat.update(_flatten(value, origin, key + "."))
        elif key in _BY_KEY:
            flat[key] = value
        else:
            known = list(_BY_KEY) + sorted(_SECTIONS)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{origin}: unknown key {key!r}{hint}")
    return flat


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config file into a flat ``{dotted key: value}``, refusing unknown keys."""
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise SettingsError(f"config file {os.fspath(path)!r} is a directory") from None
    except PermissionError:
        raise SettingsError(f"config file {os.fspath(path)!r} cannot be read: permission denied") from None
    except UnicodeDecodeError:
        raise SettingsError(f"config file {os.fspath(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from None
    return _flatten(table, os.fspath(path))


def load_settings(config: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the settings: defaults, then the TOML file, then ``DESQ_*`` variables.

    ``config`` falls back to ``$DESQ_CONFIG``; with neither, only defaults and variables apply
    (the embedded default). Raises SettingsError naming the first bad key.
    """
    env = os.environ if env is None else env
    config = config or env.get(CONFIG_ENV) or None
    from_file = read_toml(config) if config else {}

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        option = _BY_ENV.get(name)
        if option is None:
            close = difflib.get_close_matches(name, list(_BY_ENV), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"unknown setting variable {name}{hint}")
        origins[option.key] = f"{name} ({option.key})"
        values[option.key] = _parse(option, text, _from_env, origins[option.key])

    for key, raw in from_file.items():
        if key not in values:
            origins[key] = f"{config}: {key}"
            values[key] = _parse(_BY_KEY[key], raw, _from_toml, origins[key])

    settings = _build(Settings, values)
    _cross_check(settings, lambda key: origins.get(key, key))
    return settings


def _parse(option: Option, raw: Any, convert: Callable[[Option, Any], Any], origin: str) -> Any:
    try:
        value = convert(option, raw)
        _validate(option, value)
    except (ValueError, layout.LayoutError) as exc:
        raise SettingsError(f"{origin}: {exc}") from None
    return value


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, key + ".")
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def _cross_check(settings: Settings, origin: Callable[[str], str]) -> None:
    """Checks that involve more than one key; the error names where the key was set."""
    try:
        layout.check_queue_count(settings.queue_count, settings.shard_bits)
    except layout.LayoutError as exc:
        raise SettingsError(f"{origin('queue_count')}: {exc}") from None
    archive = settings.archive
    if archive.url.startswith("ec://"):
        k, m = ec_code(archive.url)
        if len(archive.nodes) != k + m:
            raise SettingsError(f"{origin('archive.nodes')}: {archive.url} needs exactly {k + m} nodes, {len(archive.nodes)} given")
    elif archive.nodes:
        raise SettingsError(f"{origin('archive.nodes')}: nodes are for an erasure-coded archive; archive.url is {archive.url!r}, not ec://K+M")
    broker = settings.broker
    if broker.url and not broker.result_backend and not broker.url.startswith(("redis://", "rediss://")):
        raise SettingsError(f"{origin('broker.result_backend')}: must be set when broker.url is not Redis")
    columns = dataclasses.asdict(settings.source.columns)
    columns = {k: v for k, v in columns.items() if k in ("id", "created_at", "path") + mode_for(settings.layout).state_columns}
    seen: dict[str, str] = {}
    for name, column in columns.items():
        if column in seen:
            key = f"source.columns.{name}"
            raise SettingsError(f"{origin(key)}: column {column!r} is already mapped by source.columns.{seen[column]}")
        seen[column] = name


# --- presenting ------------------------------------------------------------------------------


def mask(option: Option, value: Any) -> Any:
    """The value as it may be shown or logged: passwords in any URL, and secret lists, hidden."""
    if isinstance(value, tuple):
        return tuple("***" for _ in value) if option.secret else tuple(hide_password(v) for v in value)
    if isinstance(value, str):
        return hide_password(value)
    return value


def value_of(settings: Settings, key: str) -> Any:
    """The value of a dotted key, e.g. ``value_of(s, "source.columns.id")``."""
    obj: Any = settings
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def dump_toml(settings: Settings) -> str:
    """The effective settings as a TOML document, secrets masked."""
    lines: list[str] = []
    section = ""
    for option in SCHEMA:
        head, _, name = option.key.rpartition(".")
        if head != section:
            section = head
            lines.append(f"\n[{head}]")
        lines.append(f"{name} = {_toml_value(mask(option, value_of(settings, option.key)))}")
    return "\n".join(lines).lstrip("\n") + "\n"


def markdown_table() -> str:
    """The configuration table of README.md, generated from the schema."""
    rows = ["| key | variable | type | default | meaning |", "|---|---|---|---|---|"]
    for o in SCHEMA:
        kind = {str: "string", int: "integer", bool: "boolean", tuple: "list of strings"}[o.kind]
        if o.choices:
            kind = " \\| ".join(f"`{c}`" for c in o.choices)
        default = f"`{_toml_value(o.default)}`"
        meaning = o.help.replace("|", "\\|")
        rows.append(f"| `{o.key}` | `{o.env}` | {kind} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def data_path(settings: Settings, *parts: str) -> Path:
    """A path under ``data_dir`` (relative paths are relative to the working directory)."""
    return Path(settings.data_dir, *parts)
