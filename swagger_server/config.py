"""Configuration: parsed once from config.ini and the environment into a typed, frozen object.

Every key ``[SECTION] KEY`` may also come from the environment variable ``SECTION_KEY``, which
wins over the file. ``DATABASE_URL`` (a libpq URL or key=value string) wins over ``[POSTGRES]``.
A bad value raises :class:`ConfigError` with one line naming the key and what is wrong.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.extensions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Set by whoever starts the embedded server (gunicorn master, wsgi.py) for the processes it forks.
EMBEDDED_DSN_ENV = "APP_EMBEDDED_DSN"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names the key."""


@dataclass(frozen=True)
class DatabaseSettings:
    # The DSN holds the password: keep it out of repr() and say where it came from instead.
    dsn: str | None = field(default=None, repr=False)
    source: str = "embedded"  # "DATABASE_URL", "[POSTGRES]" or "embedded"

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    @property
    def safe_dsn(self) -> str:
        """The DSN with the password masked, fit for logs."""
        return mask_dsn(self.dsn) if self.dsn else "(embedded)"


@dataclass(frozen=True)
class PoolSettings:
    min_size: int = 2
    max_size: int = 10
    acquire_timeout: float = 5.0
    max_lifetime: float = 1800.0
    max_idle: float = 300.0
    check_after_idle: float = 10.0
    statement_timeout: int = 30000  # milliseconds
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class CorsSettings:
    origins: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.origins)


@dataclass(frozen=True)
class ServerSettings:
    bind: str = "127.0.0.1:8000"
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    worker_class: str = "uvicorn"
    timeout: int = 30
    log_level: str = "info"
    access_log: str = "on"  # "on" or "off": one line per request (swagger_server/access_log.py)
    max_requests: int = 0  # requests after which a worker is recycled; 0 = never
    max_requests_jitter: int = 0  # plus up to this many, at random: workers recycle apart


@dataclass(frozen=True)
class EmbeddedSettings:
    data_dir: Path = PROJECT_ROOT / ".pgdata"


@dataclass(frozen=True)
class ApiSettings:
    schemas: tuple[str, ...] = ("public",)
    tables: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    catalog_ttl: float = 60.0
    default_limit: int = 100
    max_rows: int = 1000
    max_export_rows: int = 1_000_000
    cursor_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


# --- value parsers: each takes the raw text and returns the value or raises ValueError(why) ---

def _int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return parse


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ValueError(f"must be a finite number >= {minimum}, got {raw!r}")
        return value

    return parse


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _nonempty_names(raw: str) -> tuple[str, ...]:
    names = _names(raw)
    if not names:
        raise ValueError("must name at least one entry")
    return names


def _text(raw: str) -> str:
    return raw.strip()


def _bind(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("unix:"):
        return raw
    _host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {raw!r}")
    return raw


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _path(raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class _Key:
    section: str
    key: str
    attr: str
    parse: Callable[[str], Any]

    @property
    def env(self) -> str:
        return f"{self.section}_{self.key}"


# One table for every key but [POSTGRES], which is assembled into a DSN below.
_KEYS: dict[str, tuple[_Key, ...]] = {
    "pool": (
        _Key("POOL", "MIN_SIZE", "min_size", _int(0)),
        _Key("POOL", "MAX_SIZE", "max_size", _int(1)),
        _Key("POOL", "ACQUIRE_TIMEOUT", "acquire_timeout", _seconds(0.001)),
        _Key("POOL", "MAX_LIFETIME", "max_lifetime", _seconds(1)),
        _Key("POOL", "MAX_IDLE", "max_idle", _seconds(1)),
        _Key("POOL", "CHECK_AFTER_IDLE", "check_after_idle", _seconds(0)),
        _Key("POOL", "STATEMENT_TIMEOUT", "statement_timeout", _int(0)),
        _Key("POOL", "CONNECT_TIMEOUT", "connect_timeout", _seconds(1)),
    ),
    "cors": (_Key("CORS", "ORIGINS", "origins", _names),),
    "server": (
        _Key("SERVER", "BIND", "bind", _bind),
        _Key("SERVER", "WORKERS", "workers", _int(1, 256)),
        _Key("SERVER", "WORKER_CLASS", "worker_class", _choice("asgi", "uvicorn")),
        _Key("SERVER", "TIMEOUT", "timeout", _int(1)),
        _Key("SERVER", "LOG_LEVEL", "log_level", _choice("debug", "info", "warning", "error")),
        _Key("SERVER", "ACCESS_LOG", "access_log", _choice("on", "off")),
        _Key("SERVER", "MAX_REQUESTS", "max_requests", _int(0)),
        _Key("SERVER", "MAX_REQUESTS_JITTER", "max_requests_jitter", _int(0)),
    ),
    "embedded": (_Key("EMBEDDED", "DATA_DIR", "data_dir", _path),),
    "api": (
        _Key("API", "SCHEMAS", "schemas", _nonempty_names),
        _Key("API", "TABLES", "tables", _nonempty_names),
        _Key("API", "EXCLUDE", "exclude", _names),
        _Key("API", "CATALOG_TTL", "catalog_ttl", _seconds(0)),
        _Key("API", "DEFAULT_LIMIT", "default_limit", _int(1)),
        _Key("API", "MAX_ROWS", "max_rows", _int(1)),
        _Key("API", "MAX_EXPORT_ROWS", "max_export_rows", _int(1)),
        _Key("API", "CURSOR_SECRET", "cursor_secret", _text),
    ),
}

_POSTGRES_KEYS = ("URL", "PORT", "USER", "PW", "DB")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("APP_CONFIG") or "config.ini")


def _read_ini(path: Path, required: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str.upper  # type: ignore[assignment,method-assign]
    if not path.exists():
        if required:
            raise ConfigError(f"APP_CONFIG: no such file: {path}")
        return parser
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid ini file: {exc.message.splitlines()[0]}") from None
    return parser


def _raw(parser: configparser.ConfigParser, env: Mapping[str, str], section: str, key: str):
    """The raw text of a key and where it came from, or (None, None) when unset."""
    name = f"{section}_{key}"
    if name in env:
        return env[name], name
    if parser.has_option(section, key):
        return parser.get(section, key), f"[{section}] {key}"
    return None, None


def _database(parser: configparser.ConfigParser, env: Mapping[str, str]) -> DatabaseSettings:
    url = env.get("DATABASE_URL", "").strip()
    if url:
        try:
            psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError:
            # The message of parse_dsn may quote the URL, password included: do not echo it.
            raise ConfigError("DATABASE_URL: not a valid libpq connection string") from None
        return DatabaseSettings(dsn=url, source="DATABASE_URL")
    raw = {key: _raw(parser, env, "POSTGRES", key)[0] for key in _POSTGRES_KEYS}
    if not (raw["URL"] or "").strip():
        # Nothing configured: the embedded server, once started, publishes its DSN here.
        return DatabaseSettings(dsn=env.get(EMBEDDED_DSN_ENV) or None)
    port = (raw["PORT"] or "5432").strip()
    try:
        _int(1, 65535)(port)
    except ValueError as exc:
        raise ConfigError(f"POSTGRES_PORT: {exc}") from None
    params = {
        "host": raw["URL"].strip(),
        "port": port,
        "user": (raw["USER"] or "").strip() or None,
        "password": raw["PW"] or None,
        "dbname": (raw["DB"] or "").strip() or None,
    }
    dsn = psycopg2.extensions.make_dsn(**{k: v for k, v in params.items() if v is not None})
    return DatabaseSettings(dsn=dsn, source="[POSTGRES]")


def _reject_unknown(parser: configparser.ConfigParser) -> None:
    """A misspelt section or key would be silently ignored: refuse it instead."""
    known: dict[str, set[str]] = {"POSTGRES": set(_POSTGRES_KEYS)}
    for keys in _KEYS.values():
        for spec in keys:
            known.setdefault(spec.section, set()).add(spec.key)
    for section in parser.sections():
        if section not in known:
            upper = section.upper()
            hint = f" (sections are upper case: [{upper}])" if upper in known else ""
            raise ConfigError(f"[{section}]: unknown section{hint}")
        for key in parser.options(section):
            if key not in known[section]:
                raise ConfigError(f"[{section}] {key}: unknown key")


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the configuration once. ``path`` defaults to ``$APP_CONFIG`` or ``./config.ini``."""
    env = os.environ if environ is None else environ
    explicit = path is not None or bool(env.get("APP_CONFIG"))
    parser = _read_ini(Path(path) if path is not None else config_path(env), required=explicit)
    _reject_unknown(parser)

    groups: dict[str, Any] = {}
    defaults = Settings()
    for group, keys in _KEYS.items():
        values: dict[str, Any] = {}
        for spec in keys:
            raw, origin = _raw(parser, env, spec.section, spec.key)
            if raw is None:
                continue
            try:
                values[spec.attr] = spec.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
        groups[group] = type(getattr(defaults, group))(**values)

    pool: PoolSettings = groups["pool"]
    if pool.min_size > pool.max_size:
        raise ConfigError(
            f"POOL_MIN_SIZE: must not exceed POOL_MAX_SIZE ({pool.min_size} > {pool.max_size})"
        )
    api: ApiSettings = groups["api"]
    if api.default_limit > api.max_rows:
        raise ConfigError(
            "API_DEFAULT_LIMIT: must not exceed API_MAX_ROWS "
            f"({api.default_limit} > {api.max_rows})"
        )
    return Settings(database=_database(parser, env), **groups)


def mask_dsn(dsn: str) -> str:
    """A DSN with its password replaced by ``***``; safe to log."""
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "(unparseable DSN)"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 (the mask, not a password)
    return " ".join(f"{k}={v}" for k, v in params.items())
