"""Configuration: parsed once from config.ini and the environment into a typed, frozen object.

Every key ``[SECTION] KEY`` may also come from the environment variable ``SECTION_KEY``, which
wins over the file. ``DATABASE_URL`` (a libpq URL or key=value string) wins over ``[POSTGRES]``.
A bad value raises :class:`ConfigError` with one line naming the key and what is wrong.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.extensions

from swagger_server.auth.settings import (
    AUTH_KEYS,
    DEV_JWT_SECRET,
    AuthSettings,
    check_auth_settings,
    parse_api_key,
    parse_path,
)
from swagger_server.ops.capacity import available_cpus

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
    # "transaction": the DSN reaches PostgreSQL through a transaction pooler (PgBouncer): no
    # startup options, no LISTEN through it (README "Scaling out").
    pooler: str = "none"
    # The schema-reload listener's DSN (LISTEN needs a session of its own, directly on
    # PostgreSQL); empty: the main DSN, unless behind a pooler; "off": no listener.
    listen_url: str = field(default="", repr=False)

    @property
    def behind_pooler(self) -> bool:
        return self.pooler == "transaction"

    @property
    def listen_dsn(self) -> str | None:
        """Where the schema-reload listener connects; None: LISTEN is unavailable."""
        if self.listen_url == "off":
            return None
        if self.listen_url:
            return self.listen_url
        return None if self.behind_pooler else self.dsn

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
    # A statement with no answer for STATEMENT_TIMEOUT + this is a hung peer (pool watchdog).
    query_deadline_margin: float = 5.0
    leak_threshold: float = 0.0  # seconds a checkout may last before a warning; 0 = off
    reconnect_max_delay: float = 30.0  # cap of the reconnect backoff while the database is down


@dataclass(frozen=True)
class CorsSettings:
    origins: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.origins)


@dataclass(frozen=True)
class ServerSettings:
    bind: str = "127.0.0.1:8000"
    # The CPUs this process may run on (affinity, cgroup quota), not the host's count.
    workers: int = field(default_factory=available_cpus)
    worker_class: str = "uvicorn"
    timeout: int = 30
    log_level: str = "info"
    access_log: str = "on"  # "on" or "off": one line per request (swagger_server/ops/access_log.py)
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
    reload_channel: str = "pgrest"  # NOTIFY channel that reloads every worker's catalog
    default_limit: int = 100
    max_rows: int = 1000
    max_export_rows: int = 1_000_000
    cursor_secret: str = field(default="", repr=False)
    # Denial-of-service bounds (README "Data API"): a client that stops reading is cut, exports
    # per worker are bounded (below its 10 request threads), deep offsets and slow counts too.
    export_stall_timeout: float = 30.0  # seconds a response may wait for its client to read
    max_exports: int = 4
    max_offset: int = 100_000
    count_timeout: int = 1000  # milliseconds, for count=exact
    # Embedding related rows in select (README "Related data"): how deep, how many per request.
    max_embed_depth: int = 3
    max_embeds: int = 10
    max_embed_rows: int = 100  # rows at most in one embedded array (limit.<embed> may lower it)
    aggregates: str = "off"  # "on": select=status,total.sum() groups (README "Aggregates")


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)


# --- value parsers: each takes the raw text and returns the value or raises ValueError(why) ---

# PostgreSQL's integer settings (statement_timeout, in milliseconds) and libpq's integer
# connection parameters are C ints: a larger value makes every connection attempt fail.
PG_INT_MAX = 2_147_483_647
PG_BIGINT_MAX = 2**63 - 1  # what a LIMIT accepts


@dataclass(frozen=True)
class _Number:
    """A whole number or a number of seconds within ``[minimum, maximum]``."""

    minimum: float
    maximum: float | None
    whole: bool

    def __call__(self, raw: str) -> Any:
        try:
            value: float = int(raw) if self.whole else float(raw)
        except ValueError:
            expected = "an integer" if self.whole else "a number of seconds"
            raise ValueError(f"expected {expected}, got {raw!r}") from None
        within = math.isfinite(value) and value >= self.minimum and (
            self.maximum is None or value <= self.maximum
        )
        if not within:
            shown = value if self.whole else repr(raw)
            finite = "" if self.whole else "a finite number "
            raise ValueError(f"must be {finite}{self.range_text()}, got {shown}")
        return value

    def range_text(self) -> str:
        low = _plain(self.minimum)
        if self.maximum is None:
            return f">= {low}"
        return f"between {low} and {_plain(self.maximum)}"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _int(minimum: int, maximum: int | None = None) -> _Number:
    return _Number(minimum, maximum, whole=True)


def _seconds(minimum: float, maximum: float | None = None) -> _Number:
    return _Number(minimum, maximum, whole=False)


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _nonempty_names(raw: str) -> tuple[str, ...]:
    names = _names(raw)
    if not names:
        raise ValueError("must name at least one entry")
    return names


def _text(raw: str) -> str:
    return raw.strip()


def _listen_url(raw: str) -> str:
    """A libpq URL or key=value string, or ``off``; checked like DATABASE_URL, never echoed."""
    value = raw.strip()
    if value.lower() == "off":
        return "off"
    if not value:
        return ""
    try:
        params = psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        raise ValueError("not a valid libpq connection string (or 'off')") from None
    try:
        _check_dsn(params, "its")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("its: ")) from None
    return value


def option_settings(options: str) -> tuple[tuple[str, str], ...]:
    """The ``-c name=value`` settings of a libpq ``options`` string (also ``-cname=value`` and
    ``--name=value``; backslash escapes a space), in order; ValueError for anything else.

    Behind a transaction pooler they cannot go in the startup packet: the service sets them per
    transaction instead (swagger_server/db/transaction.py).
    """
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    settings: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            pair, index = words[index + 1], index + 2
        elif len(word) > 2 and word.startswith(("-c", "--")):
            pair, index = word[2:], index + 1
        else:
            raise ValueError(f"only -c name=value settings can be applied per transaction, "
                             f"not {word!r}")
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected -c name=value, got {pair!r}")
        settings.append((name.replace("-", "_").lower(), value))
    return tuple(settings)


def _channel(raw: str) -> str:
    """A LISTEN channel: any identifier PostgreSQL keeps whole (quoted when used); empty: off."""
    name = raw.strip()
    if len(name.encode()) > 63 or "\x00" in name:
        raise ValueError("must be a name of at most 63 bytes")
    return name


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


# Upper bounds: what PostgreSQL and libpq accept where they apply (milliseconds and libpq's
# integers are C ints), otherwise far above any sane value but low enough that a typo (an extra
# zero or three) is caught at start rather than found in production.
_HOUR = 3600
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY

# One table for every key but [POSTGRES], which is assembled into a DSN below. Every number has
# both bounds (tests/test_config.py checks that for keys added later too).
_KEYS: dict[str, tuple[_Key, ...]] = {
    # [POSTGRES]'s keys other than the DSN's parts (_POSTGRES_KEYS, assembled below).
    "database": (
        _Key("POSTGRES", "POOLER", "pooler", _choice("none", "transaction")),
        _Key("POSTGRES", "LISTEN_URL", "listen_url", _listen_url),
    ),
    "pool": (
        _Key("POOL", "MIN_SIZE", "min_size", _int(0, 1000)),
        _Key("POOL", "MAX_SIZE", "max_size", _int(1, 1000)),
        _Key("POOL", "ACQUIRE_TIMEOUT", "acquire_timeout", _seconds(0.001, _HOUR)),
        _Key("POOL", "MAX_LIFETIME", "max_lifetime", _seconds(1, _WEEK)),
        _Key("POOL", "MAX_IDLE", "max_idle", _seconds(1, _WEEK)),
        _Key("POOL", "CHECK_AFTER_IDLE", "check_after_idle", _seconds(0, _DAY)),
        _Key("POOL", "STATEMENT_TIMEOUT", "statement_timeout", _int(0, PG_INT_MAX)),
        _Key("POOL", "CONNECT_TIMEOUT", "connect_timeout", _seconds(1, _HOUR)),
        _Key("POOL", "QUERY_DEADLINE_MARGIN", "query_deadline_margin", _seconds(0.2, _HOUR)),
        _Key("POOL", "LEAK_THRESHOLD", "leak_threshold", _seconds(0, _WEEK)),
        _Key("POOL", "RECONNECT_MAX_DELAY", "reconnect_max_delay", _seconds(1, _HOUR)),
    ),
    "cors": (_Key("CORS", "ORIGINS", "origins", _names),),
    "server": (
        _Key("SERVER", "BIND", "bind", _bind),
        _Key("SERVER", "WORKERS", "workers", _int(1, 256)),
        _Key("SERVER", "WORKER_CLASS", "worker_class", _choice("asgi", "uvicorn")),
        _Key("SERVER", "TIMEOUT", "timeout", _int(1, _DAY)),
        _Key("SERVER", "LOG_LEVEL", "log_level", _choice("debug", "info", "warning", "error")),
        _Key("SERVER", "ACCESS_LOG", "access_log", _choice("on", "off")),
        _Key("SERVER", "MAX_REQUESTS", "max_requests", _int(0, 100_000_000)),
        _Key("SERVER", "MAX_REQUESTS_JITTER", "max_requests_jitter", _int(0, 100_000_000)),
    ),
    "embedded": (_Key("EMBEDDED", "DATA_DIR", "data_dir", _path),),
    "api": (
        _Key("API", "SCHEMAS", "schemas", _nonempty_names),
        _Key("API", "TABLES", "tables", _nonempty_names),
        _Key("API", "EXCLUDE", "exclude", _names),
        _Key("API", "CATALOG_TTL", "catalog_ttl", _seconds(0, _DAY)),
        _Key("API", "RELOAD_CHANNEL", "reload_channel", _channel),
        _Key("API", "DEFAULT_LIMIT", "default_limit", _int(1, 100_000)),
        _Key("API", "MAX_ROWS", "max_rows", _int(1, 100_000)),
        _Key("API", "MAX_EXPORT_ROWS", "max_export_rows", _int(1, PG_BIGINT_MAX)),
        _Key("API", "CURSOR_SECRET", "cursor_secret", _text),
        _Key("API", "EXPORT_STALL_TIMEOUT", "export_stall_timeout", _seconds(0.1, _DAY)),
        _Key("API", "MAX_EXPORTS", "max_exports", _int(1, 1000)),
        _Key("API", "MAX_OFFSET", "max_offset", _int(0, PG_BIGINT_MAX)),
        _Key("API", "COUNT_TIMEOUT", "count_timeout", _int(1, PG_INT_MAX)),
        _Key("API", "MAX_EMBED_DEPTH", "max_embed_depth", _int(0, 10)),
        _Key("API", "MAX_EMBEDS", "max_embeds", _int(0, 100)),
        _Key("API", "MAX_EMBED_ROWS", "max_embed_rows", _int(1, 100_000)),
        _Key("API", "AGGREGATES", "aggregates", _choice("off", "on")),
    ),
}

_POSTGRES_KEYS = ("URL", "PORT", "USER", "PW", "DB")
# [API_KEYS] is free-form: each key is a label, its value '<sha256 hex> <role>'.
_API_KEYS_SECTION = "API_KEYS"


def _optional_path(raw: str) -> Path | None:
    return parse_path(raw) if raw.strip() else None


def _auth_keys() -> tuple[_Key, ...]:
    """[AUTH] from auth/settings.py's table; numbers get this table's bounded parser."""
    overrides: dict[str, Callable[[str], Any]] = {
        "JWT_LEEWAY": _seconds(0, _HOUR),
        "JWT_PUBLIC_KEYS": _optional_path,
    }
    return tuple(_Key("AUTH", key, attr, overrides.get(key, parse))
                 for key, (attr, parse) in AUTH_KEYS.items())


_KEYS["auth"] = _auth_keys()


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


# libpq's integer connection parameters that matter to the pool. A value libpq rejects makes
# every connection attempt fail (503 forever): check them at start instead. connect_timeout 0
# means "wait forever" to libpq, which a pool must never do.
_DSN_INTEGERS: dict[str, _Number] = {
    "connect_timeout": _int(1, _HOUR),
    "keepalives": _int(0, 1),
    "keepalives_idle": _int(0, PG_INT_MAX),
    "keepalives_interval": _int(0, PG_INT_MAX),
    "keepalives_count": _int(0, PG_INT_MAX),
    "tcp_user_timeout": _int(0, PG_INT_MAX),
}
_PORT = _int(1, 65535)


def _check_dsn(params: Mapping[str, str], where: str) -> None:
    """Refuse a port or integer parameter libpq would reject, naming it but not its value.

    Values are not echoed: in a URL with an unencoded ``/`` or ``#`` in the password, part of
    the password ends up in the port.
    """
    for port in params.get("port", "").split(","):
        if port.strip() and not _valid(_PORT, port):
            raise ConfigError(
                f"{where}: the port is not a number between 1 and 65535 (in a URL, a password "
                "with / # ? @ : or % must be percent-encoded)"
            )
    if "@" in params.get("host", "") or "@" in params.get("hostaddr", ""):
        # libpq ends a URL's password at its first "@": the rest becomes the host name and
        # would be logged with it.
        raise ConfigError(
            f"{where}: the host name holds an '@' (in a URL, a password with / # ? @ : or % "
            "must be percent-encoded)"
        )
    for name, number in _DSN_INTEGERS.items():
        if name in params and not _valid(number, params[name]):
            raise ConfigError(f"{where}: {name} must be an integer {number.range_text()}")


def _valid(number: _Number, raw: str) -> bool:
    try:
        number(raw.strip())
    except ValueError:
        return False
    return True


def _database(parser: configparser.ConfigParser, env: Mapping[str, str]) -> DatabaseSettings:
    url = env.get("DATABASE_URL", "").strip()
    if url:
        try:
            params = psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError:
            # The message of parse_dsn may quote the URL, password included: do not echo it.
            raise ConfigError("DATABASE_URL: not a valid libpq connection string") from None
        _check_dsn(params, "DATABASE_URL")
        return DatabaseSettings(dsn=url, source="DATABASE_URL")
    host, origin = _raw(parser, env, "POSTGRES", "URL")
    if not (host or "").strip():
        # Nothing configured: the embedded server, once started, publishes its DSN here.
        return DatabaseSettings(dsn=env.get(EMBEDDED_DSN_ENV) or None)
    if "://" in host or "@" in host:
        # A connection URL in the host key: it would be logged as a host name, password and
        # all. Never echo it.
        raise ConfigError(
            f"{origin}: is a host name, but holds a connection URL or credentials: "
            "put the URL in the DATABASE_URL environment variable instead"
        )
    raw = {key: _raw(parser, env, "POSTGRES", key)[0] for key in _POSTGRES_KEYS}
    port = (raw["PORT"] or "5432").strip()
    try:
        _PORT(port)
    except ValueError as exc:
        raise ConfigError(f"POSTGRES_PORT: {exc}") from None
    params = {
        "host": host.strip(),
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
    parser_keys = set(parser.options(_API_KEYS_SECTION)) if parser.has_section(
        _API_KEYS_SECTION) else set()
    known[_API_KEYS_SECTION] = parser_keys  # any label
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
    groups["auth"] = _with_api_keys(parser, groups["auth"])
    chosen: DatabaseSettings = groups.pop("database")
    database = dataclasses.replace(_database(parser, env), pooler=chosen.pooler,
                                   listen_url=chosen.listen_url)
    _check_pooler(database)
    return Settings(database=database, **groups)


def _check_pooler(database: DatabaseSettings) -> None:
    """Behind a transaction pooler the DSN's ``options`` are applied per transaction: only
    ``-c name=value`` settings can be (checked at start, not per request)."""
    if not database.behind_pooler or not database.dsn:
        return
    try:
        option_settings(psycopg2.extensions.parse_dsn(database.dsn).get("options", ""))
    except ValueError as exc:
        raise ConfigError(f"{database.source}: options with POSTGRES_POOLER=transaction: "
                          f"{exc}") from None


def _with_api_keys(parser: configparser.ConfigParser, auth: AuthSettings) -> AuthSettings:
    """[API_KEYS] added to [AUTH], then the keys that must agree with each other checked."""
    keys = []
    if parser.has_section(_API_KEYS_SECTION):
        for name in parser.options(_API_KEYS_SECTION):
            try:
                keys.append(parse_api_key(name.lower(), parser.get(_API_KEYS_SECTION, name)))
            except ValueError as exc:
                raise ConfigError(f"[API_KEYS] {name.lower()}: {exc}") from None
    auth = dataclasses.replace(auth, api_keys=tuple(keys))
    try:
        check_auth_settings(auth)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return auth


# libpq parameters that hold a secret (its own table marks them "*" = password, or "D" = debug
# only, for the SCRAM keys); the rest are names, numbers, modes or paths (sslkey, passfile).
SECRET_DSN_PARAMS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)


def _is_secret_param(name: str) -> bool:
    # Also whatever a later libpq adds under a telling name.
    return name in SECRET_DSN_PARAMS or "password" in name or "secret" in name or (
        name.endswith("_key")
    )


def mask_dsn(dsn: str) -> str:
    """A DSN with every secret parameter replaced by ``***``; safe to log."""
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "(unparseable DSN)"
    return " ".join(
        f"{name}={'***' if _is_secret_param(name) else value}" for name, value in params.items()
    )


# --- start-up checks of the environment --------------------------------------------------------

# Prefixes of the variables this service reads; one of them that names no key is a typo.
_ENV_PREFIXES = ("POOL_", "API_", "SERVER_", "CORS_", "AUTH_", "EMBEDDED_", "POSTGRES_")
# Names other tools use (the postgres image's, libpq's) that spelling alone does not lead from.
_ALIASES = {
    "POSTGRES_PASSWORD": "POSTGRES_PW",
    "POSTGRES_PASS": "POSTGRES_PW",
    "POSTGRES_HOST": "POSTGRES_URL",
    "POSTGRES_HOSTNAME": "POSTGRES_URL",
    "POSTGRES_DATABASE": "POSTGRES_DB",
    "POSTGRES_DBNAME": "POSTGRES_DB",
}


def known_variables() -> frozenset[str]:
    names = {spec.env for keys in _KEYS.values() for spec in keys}
    return frozenset(names | {f"POSTGRES_{key}" for key in _POSTGRES_KEYS})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per environment variable with our prefixes that matches no key.

    Only names are reported, never values: a misspelt ``POSTGRES_PASSWORD`` holds a secret.
    """
    env = os.environ if environ is None else environ
    known = known_variables()
    warnings = []
    for name in sorted(env):
        if not name.startswith(_ENV_PREFIXES) or name in known:
            continue
        close = [_ALIASES[name]] if name in _ALIASES else difflib.get_close_matches(
            name, known, n=1, cutoff=0.75
        )
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"environment variable {name} matches no setting and is ignored{hint}")
    return warnings


# --- one Settings object per process -----------------------------------------------------------

_process_settings: Settings | None = None
_process_lock = threading.Lock()


def set_process_settings(settings: Settings) -> Settings:
    """Make ``settings`` this process's (and its forked children's) settings; returns them.

    The gunicorn master and ``python wsgi.py`` call this once they have loaded the settings and
    started the embedded server. A worker inherits them through fork: its pool and its app use
    that same object, never a second read of a file that may have changed since.
    """
    global _process_settings
    with _process_lock:
        _process_settings = settings
    return settings


def process_settings() -> Settings:
    """This process's settings: those its starter set (inherited through fork), else read now,
    once (a server other than gunicorn importing ``wsgi``)."""
    global _process_settings
    with _process_lock:
        if _process_settings is None:
            _process_settings = load_settings()
        return _process_settings


def with_embedded_dsn(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """``settings`` pointing at the embedded server started after they were loaded.

    The starter publishes the server's DSN in the environment; nothing else is read again.
    """
    env = os.environ if environ is None else environ
    dsn = env.get(EMBEDDED_DSN_ENV)
    if not settings.database.embedded or settings.database.dsn or not dsn:
        return settings
    return dataclasses.replace(settings,
                               database=dataclasses.replace(settings.database, dsn=dsn),
                               auth=embedded_demo_auth(settings.auth))


# The embedded demo database's auth when [AUTH] and [API_KEYS] say nothing: tokens signed with
# the development secret (python -m swagger_server.keys token ...), anonymous requests as
# web_anon (sql/demo_roles.sql). Never with a configured database: the secret is public.
DEMO_ANONYMOUS_ROLE = "web_anon"
DEMO_AUTH_NOTE = (
    "embedded demo database without [AUTH]: tokens signed with the development secret are "
    f"accepted (python -m swagger_server.keys token --sub 42 --role web_user) and requests "
    f"without credentials run as {DEMO_ANONYMOUS_ROLE}; never use this secret elsewhere"
)


def embedded_demo_auth(auth: AuthSettings) -> AuthSettings:
    """The demo's credentials, unless some are configured (then used as they are). Other
    [AUTH] keys are kept: ``AUTH_ADMIN_ROLES=web_user scripts/serve`` opens /pool to tokens."""
    if auth.enabled or auth.anonymous_role:
        return auth
    return dataclasses.replace(auth, jwt_secret=DEV_JWT_SECRET,
                               anonymous_role=DEMO_ANONYMOUS_ROLE)
