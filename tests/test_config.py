"""Configuration: defaults, config.ini, environment, DATABASE_URL, errors, secrets, the example.

Every test passes ``environ`` explicitly, so none depends on the real environment.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import psycopg2.extensions
import pytest

from swagger_server import config
from swagger_server.config import (
    EMBEDDED_DSN_ENV,
    PROJECT_ROOT,
    ConfigError,
    CorsSettings,
    Settings,
    load_settings,
)
from swagger_server.ops.capacity import available_cpus

EXAMPLE = PROJECT_ROOT / "config.ini.example"
PASSWORD = "Sup3r-s3cret!pw"


def write_ini(tmp_path: Path, text: str, name: str = "config.ini") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, **environ: str) -> str:
    """The message of the ConfigError that loading raises; asserts it is one line."""
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ=environ)
    message = str(info.value)
    assert message.strip(), "empty ConfigError message"
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no config.ini in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# --- defaults ----------------------------------------------------------------------------------

def test_defaults_without_file_or_environment(empty_cwd: Path) -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.database.embedded
    assert settings.database.dsn is None
    assert settings.database.source == "embedded"
    pool = settings.pool
    assert (pool.min_size, pool.max_size) == (2, 10)
    assert pool.acquire_timeout == 5.0
    assert pool.max_lifetime == 1800.0
    assert pool.max_idle == 300.0
    assert pool.check_after_idle == 10.0
    assert pool.statement_timeout == 30000
    assert pool.connect_timeout == 5.0
    assert settings.cors.origins == ()
    assert not settings.cors.enabled
    server = settings.server
    assert server.bind == "127.0.0.1:8000"
    assert server.workers == available_cpus()
    assert server.worker_class == "uvicorn"
    assert server.timeout == 30
    assert server.log_level == "info"
    assert settings.embedded.data_dir == PROJECT_ROOT / ".pgdata"
    api = settings.api
    assert api.schemas == ("public",)
    assert api.tables == ("*",)
    assert api.exclude == ()
    assert api.catalog_ttl == 60.0
    assert (api.default_limit, api.max_rows, api.max_export_rows) == (100, 1000, 1_000_000)
    assert api.cursor_secret == ""


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pool.max_size = 99  # type: ignore[misc]


def test_embedded_dsn_published_by_the_starter_is_used(empty_cwd: Path) -> None:
    settings = load_settings(environ={EMBEDDED_DSN_ENV: "host=/tmp/sock port=5432"})
    assert settings.database.embedded
    assert settings.database.dsn == "host=/tmp/sock port=5432"


# --- the ini file ------------------------------------------------------------------------------

def test_values_come_from_the_ini_file_given_as_path(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POOL]\nMAX_SIZE = 7\nACQUIRE_TIMEOUT = 1.5\n"
                               "[SERVER]\nBIND = 0.0.0.0:9000\nLOG_LEVEL = DEBUG\n"
                               "[API]\nSCHEMAS = app, public\n")
    settings = load_settings(path=path, environ={})
    assert settings.pool.max_size == 7
    assert settings.pool.acquire_timeout == 1.5
    assert settings.pool.min_size == 2  # untouched keys keep their default
    assert settings.server.bind == "0.0.0.0:9000"
    assert settings.server.log_level == "debug"
    assert settings.api.schemas == ("app", "public")


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POOL]\nMAX_SIZE = 7\n")
    assert load_settings(path=str(path), environ={}).pool.max_size == 7


def test_keys_in_the_file_are_case_insensitive(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POOL]\nmax_size = 7\n")
    assert load_settings(path=path, environ={}).pool.max_size == 7


def test_app_config_names_the_file(tmp_path: Path, empty_cwd: Path) -> None:
    path = write_ini(tmp_path, "[POOL]\nMAX_SIZE = 4\n", name="elsewhere.ini")
    assert load_settings(environ={"APP_CONFIG": str(path)}).pool.max_size == 4


def test_config_ini_in_the_working_directory_is_read(empty_cwd: Path) -> None:
    write_ini(empty_cwd, "[POOL]\nMAX_SIZE = 3\n")
    assert load_settings(environ={}).pool.max_size == 3


def test_a_missing_config_ini_is_not_an_error(empty_cwd: Path) -> None:
    assert not (empty_cwd / "config.ini").exists()
    assert load_settings(environ={}) == Settings()


def test_app_config_naming_a_missing_file_is_an_error(tmp_path: Path, empty_cwd: Path) -> None:
    missing = tmp_path / "nope.ini"
    message = config_error(APP_CONFIG=str(missing))
    assert "APP_CONFIG" in message
    assert str(missing) in message


def test_a_missing_file_given_as_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    assert str(missing) in config_error(path=missing)


@pytest.mark.parametrize(
    "text",
    [
        "MAX_SIZE = 5\n",  # no section header
        "[POOL\nMAX_SIZE = 5\n",  # broken header
        "[POOL]\nMAX_SIZE = 5\nMAX_SIZE = 6\n",  # duplicate key
        "[POOL]\nthis is not a key value line\n",
        "[POOL]\nMIN_SIZE = 1\n[POOL]\nMAX_SIZE = 5\n",  # duplicate section
    ],
)
def test_bad_ini_syntax_is_one_line_naming_the_file(tmp_path: Path, text: str) -> None:
    path = write_ini(tmp_path, text)
    message = config_error(path=path)
    assert str(path) in message
    assert "ini" in message


def test_a_bad_ini_line_does_not_echo_a_password(tmp_path: Path) -> None:
    path = write_ini(tmp_path, f"[POSTGRES]\nURL = db\nPW {PASSWORD}\n")
    assert PASSWORD not in config_error(path=path)


def test_percent_signs_are_literal(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POSTGRES]\nURL = db\nPW = 100%real%(x)s\n")
    dsn = load_settings(path=path, environ={}).database.dsn
    assert dsn is not None
    assert psycopg2.extensions.parse_dsn(dsn)["password"] == "100%real%(x)s"


# --- the environment ---------------------------------------------------------------------------

def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POOL]\nMAX_SIZE = 5\nMIN_SIZE = 1\n[SERVER]\nWORKERS = 3\n")
    settings = load_settings(path=path, environ={"POOL_MAX_SIZE": "8", "SERVER_WORKERS": "1"})
    assert settings.pool.max_size == 8
    assert settings.pool.min_size == 1  # from the file
    assert settings.server.workers == 1


def test_environment_alone_sets_every_section(empty_cwd: Path) -> None:
    settings = load_settings(environ={
        "POOL_STATEMENT_TIMEOUT": "0",
        "CORS_ORIGINS": "https://a.example",
        "SERVER_WORKER_CLASS": "uvicorn",
        "EMBEDDED_DATA_DIR": "/var/lib/pgrest/pgdata",
        "API_MAX_ROWS": "50",
        "API_DEFAULT_LIMIT": "10",
        "API_CURSOR_SECRET": "  s3cret  ",
    })
    assert settings.pool.statement_timeout == 0
    assert settings.cors.origins == ("https://a.example",)
    assert settings.server.worker_class == "uvicorn"
    assert settings.embedded.data_dir == Path("/var/lib/pgrest/pgdata")
    assert (settings.api.max_rows, settings.api.default_limit) == (50, 10)
    assert settings.api.cursor_secret == "s3cret"


def test_a_relative_data_dir_is_relative_to_the_project(empty_cwd: Path) -> None:
    settings = load_settings(environ={"EMBEDDED_DATA_DIR": "var/pg"})
    assert settings.embedded.data_dir == PROJECT_ROOT / "var" / "pg"


def test_an_empty_cors_variable_turns_off_origins_from_the_file(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[CORS]\nORIGINS = https://a.example\n")
    assert load_settings(path=path, environ={}).cors.enabled
    assert not load_settings(path=path, environ={"CORS_ORIGINS": ""}).cors.enabled


# --- the database ------------------------------------------------------------------------------

def test_postgres_section_assembles_a_dsn(tmp_path: Path) -> None:
    path = write_ini(tmp_path, f"[POSTGRES]\nURL = db.internal\nPORT = 6543\nUSER = app\n"
                               f"PW = {PASSWORD}\nDB = shop\n")
    database = load_settings(path=path, environ={}).database
    assert database.source == "[POSTGRES]"
    assert not database.embedded
    assert database.dsn is not None
    assert psycopg2.extensions.parse_dsn(database.dsn) == {
        "host": "db.internal", "port": "6543", "user": "app", "password": PASSWORD,
        "dbname": "shop",
    }


def test_postgres_port_defaults_to_5432_and_empty_keys_are_left_out(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POSTGRES]\nURL = db\nUSER =\nPW =\n")
    dsn = load_settings(path=path, environ={}).database.dsn
    assert dsn is not None
    assert psycopg2.extensions.parse_dsn(dsn) == {"host": "db", "port": "5432"}


def test_a_password_with_spaces_and_quotes_survives(tmp_path: Path) -> None:
    password = "it's a 'pass' word\\"
    path = write_ini(tmp_path, f"[POSTGRES]\nURL = db\nPW = {password}\n")
    dsn = load_settings(path=path, environ={}).database.dsn
    assert dsn is not None
    assert psycopg2.extensions.parse_dsn(dsn)["password"] == password


def test_postgres_keys_come_from_the_environment_too(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POSTGRES]\nURL = db\nPW = from-file\n")
    settings = load_settings(path=path, environ={"POSTGRES_PW": PASSWORD, "POSTGRES_DB": "x"})
    assert settings.database.dsn is not None
    params = psycopg2.extensions.parse_dsn(settings.database.dsn)
    assert (params["password"], params["dbname"]) == (PASSWORD, "x")


def test_postgres_without_url_means_embedded(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[POSTGRES]\nURL =\nUSER = app\n")
    assert load_settings(path=path, environ={}).database.embedded


@pytest.mark.parametrize(
    "url",
    [f"postgresql://app:{PASSWORD}@db.internal:5432/shop",
     f"host=db.internal user=app password={PASSWORD} dbname=shop"],
)
def test_database_url_wins_over_postgres_section(tmp_path: Path, url: str) -> None:
    path = write_ini(tmp_path, "[POSTGRES]\nURL = other-host\nPW = other\n")
    database = load_settings(path=path, environ={"DATABASE_URL": url}).database
    assert database.source == "DATABASE_URL"
    assert database.dsn == url
    assert not database.embedded


def test_database_url_wins_over_the_embedded_dsn(empty_cwd: Path) -> None:
    database = load_settings(
        environ={"DATABASE_URL": "host=db", EMBEDDED_DSN_ENV: "host=/tmp/x"}
    ).database
    assert (database.source, database.dsn) == ("DATABASE_URL", "host=db")


def test_a_blank_database_url_is_ignored(empty_cwd: Path) -> None:
    assert load_settings(environ={"DATABASE_URL": "  "}).database.embedded


@pytest.mark.parametrize(
    "url",
    [f"postgresql://app:{PASSWORD}@db:5432/shop?bogus=1",
     f"host=db password='{PASSWORD}",
     f"postgresql://app:{PASSWORD}@[::1/shop",
     f"nonsense {PASSWORD}"],
)
def test_an_unparseable_database_url_is_an_error_that_hides_the_password(
    empty_cwd: Path, url: str
) -> None:
    message = config_error(DATABASE_URL=url)
    assert message.startswith("DATABASE_URL")
    assert PASSWORD not in message


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_a_bad_postgres_port_is_an_error(tmp_path: Path, port: str) -> None:
    path = write_ini(tmp_path, f"[POSTGRES]\nURL = db\nPORT = {port}\nPW = {PASSWORD}\n")
    message = config_error(path=path)
    assert "PORT" in message
    assert PASSWORD not in message


# --- secrets stay out of logs ------------------------------------------------------------------

@pytest.mark.parametrize(
    "environ",
    [{"DATABASE_URL": f"postgresql://app:{PASSWORD}@db:5432/shop"},
     {"DATABASE_URL": f"host=db user=app password={PASSWORD}"},
     {"POSTGRES_URL": "db", "POSTGRES_PW": PASSWORD}],
)
def test_the_password_is_not_in_repr_or_safe_dsn(empty_cwd: Path, environ: dict[str, str]) -> None:
    settings = load_settings(environ=environ)
    assert settings.database.dsn is not None and PASSWORD in settings.database.dsn
    database = settings.database
    for text in (repr(settings), str(settings), repr(database), database.safe_dsn):
        assert PASSWORD not in text, text
    assert "password=***" in settings.database.safe_dsn
    assert "db" in settings.database.safe_dsn  # still says where it connects


def test_the_cursor_secret_is_not_in_repr(empty_cwd: Path) -> None:
    settings = load_settings(environ={"API_CURSOR_SECRET": PASSWORD})
    assert settings.api.cursor_secret == PASSWORD
    assert PASSWORD not in repr(settings)


def test_safe_dsn_without_a_dsn_says_embedded() -> None:
    assert Settings().database.safe_dsn == "(embedded)"


# --- bad values --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"POOL_MAX_SIZE": "ten"}, "POOL_MAX_SIZE"),
        ({"POOL_MAX_SIZE": "5.5"}, "POOL_MAX_SIZE"),
        ({"POOL_MAX_SIZE": ""}, "POOL_MAX_SIZE"),
        ({"POOL_MAX_SIZE": "0"}, "POOL_MAX_SIZE"),
        ({"POOL_MIN_SIZE": "-1"}, "POOL_MIN_SIZE"),
        ({"POOL_ACQUIRE_TIMEOUT": "0"}, "POOL_ACQUIRE_TIMEOUT"),
        ({"POOL_ACQUIRE_TIMEOUT": "soon"}, "POOL_ACQUIRE_TIMEOUT"),
        ({"POOL_MAX_LIFETIME": "inf"}, "POOL_MAX_LIFETIME"),
        ({"POOL_MAX_IDLE": "nan"}, "POOL_MAX_IDLE"),
        ({"POOL_CHECK_AFTER_IDLE": "-1"}, "POOL_CHECK_AFTER_IDLE"),
        ({"POOL_STATEMENT_TIMEOUT": "1.5"}, "POOL_STATEMENT_TIMEOUT"),
        ({"POOL_CONNECT_TIMEOUT": "0.5"}, "POOL_CONNECT_TIMEOUT"),
        ({"POOL_MIN_SIZE": "5", "POOL_MAX_SIZE": "3"}, "POOL_MIN_SIZE"),
        ({"SERVER_BIND": "localhost"}, "SERVER_BIND"),
        ({"SERVER_BIND": "localhost:http"}, "SERVER_BIND"),
        ({"SERVER_BIND": "0.0.0.0:70000"}, "SERVER_BIND"),
        ({"SERVER_BIND": "0.0.0.0:0"}, "SERVER_BIND"),
        ({"SERVER_WORKERS": "0"}, "SERVER_WORKERS"),
        ({"SERVER_WORKERS": "257"}, "SERVER_WORKERS"),
        ({"SERVER_WORKER_CLASS": "sync"}, "SERVER_WORKER_CLASS"),
        ({"SERVER_WORKER_CLASS": "gevent"}, "SERVER_WORKER_CLASS"),
        ({"SERVER_TIMEOUT": "0"}, "SERVER_TIMEOUT"),
        ({"SERVER_LOG_LEVEL": "verbose"}, "SERVER_LOG_LEVEL"),
        ({"API_SCHEMAS": " , "}, "API_SCHEMAS"),
        ({"API_TABLES": ""}, "API_TABLES"),
        ({"API_CATALOG_TTL": "-5"}, "API_CATALOG_TTL"),
        ({"API_MAX_ROWS": "0"}, "API_MAX_ROWS"),
        ({"API_MAX_EXPORT_ROWS": "many"}, "API_MAX_EXPORT_ROWS"),
        ({"API_DEFAULT_LIMIT": "500", "API_MAX_ROWS": "100"}, "API_DEFAULT_LIMIT"),
    ],
)
def test_a_bad_environment_value_names_its_variable(
    empty_cwd: Path, environ: dict[str, str], key: str
) -> None:
    message = config_error(**environ)
    assert message.startswith(f"{key}:"), message
    assert len(message) > len(key) + 5, f"says nothing about what is wrong: {message!r}"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[POOL]\nMAX_SIZE = lots\n", "[POOL] MAX_SIZE"),
        ("[POOL]\nMIN_SIZE = 20\n", "POOL_MIN_SIZE"),  # above the default MAX_SIZE of 10
        ("[SERVER]\nBIND = nowhere\n", "[SERVER] BIND"),
        ("[SERVER]\nWORKER_CLASS = eventlet\n", "[SERVER] WORKER_CLASS"),
        ("[API]\nDEFAULT_LIMIT = x\n", "[API] DEFAULT_LIMIT"),
    ],
)
def test_a_bad_file_value_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(path=write_ini(tmp_path, text))
    assert message.startswith(f"{key}:"), message


def test_the_error_says_what_is_wrong(empty_cwd: Path) -> None:
    assert config_error(POOL_MAX_SIZE="ten") == "POOL_MAX_SIZE: expected an integer, got 'ten'"
    assert "between 1 and 256" in config_error(SERVER_WORKERS="0")
    assert "asgi" in config_error(SERVER_WORKER_CLASS="sync")
    assert "HOST:PORT" in config_error(SERVER_BIND="localhost")
    assert "5 > 3" in config_error(POOL_MIN_SIZE="5", POOL_MAX_SIZE="3")


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "[::1]:8080", "unix:/run/pgrest.sock",
                                  "localhost:1"])
def test_good_binds_are_accepted(empty_cwd: Path, bind: str) -> None:
    assert load_settings(environ={"SERVER_BIND": bind}).server.bind == bind


def test_a_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- CORS origins ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "origins"),
    [
        ("", ()),
        ("   ", ()),
        (" , ,", ()),
        ("https://app.example", ("https://app.example",)),
        ("https://a.example, http://localhost:3000", ("https://a.example", "http://localhost:3000")),
        ("https://a.example,https://b.example,", ("https://a.example", "https://b.example")),
        ("*", ("*",)),
    ],
)
def test_cors_origins_are_comma_separated(
    empty_cwd: Path, raw: str, origins: tuple[str, ...]
) -> None:
    cors = load_settings(environ={"CORS_ORIGINS": raw}).cors
    assert cors.origins == origins
    assert cors.enabled == bool(origins)
    assert cors == CorsSettings(origins=origins)


# --- config.ini.example: the documentation of every key ---------------------------------------

_SECTION = re.compile(r"^\[([A-Z]+)\]\s*$")
_ACTIVE = re.compile(r"^([A-Z_]+)\s*=\s*(.*)$")
_COMMENTED = re.compile(r"^;\s*([A-Z_]+)\s*=\s*(.*)$")


def example_keys() -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """``({(section, key): value} active, {(section, key): value} commented out)``."""
    active: dict[tuple[str, str], str] = {}
    commented: dict[tuple[str, str], str] = {}
    section = ""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if match := _SECTION.match(line):
            section = match.group(1)
            continue
        match = _ACTIVE.match(line) or _COMMENTED.match(line)
        if not match:
            continue
        assert section, f"line {number + 1}: key outside a section"
        where = active if match.re is _ACTIVE else commented
        assert (section, match.group(1)) not in {**active, **commented}, f"duplicate: {line}"
        where[(section, match.group(1))] = match.group(2)
        above = lines[number - 1]
        assert above.startswith("# ") and len(above) > 10, (
            f"line {number + 1}: {line!r} needs a one-line comment above it"
        )
    return active, commented


def known_keys() -> set[tuple[str, str]]:
    keys = {(spec.section, spec.key) for specs in config._KEYS.values() for spec in specs}
    return keys | {("POSTGRES", key) for key in config._POSTGRES_KEYS}


def test_the_example_documents_every_key_and_no_other() -> None:
    active, commented = example_keys()
    documented = set(active) | set(commented)
    assert known_keys() - documented == set(), "keys missing from config.ini.example"
    assert documented - known_keys() == set(), "config.ini.example has keys config.py ignores"


def test_the_example_as_is_gives_the_defaults() -> None:
    assert load_settings(path=EXAMPLE, environ={}) == Settings()


def test_the_example_leaves_unset_keys_commented_out() -> None:
    _active, commented = example_keys()
    assert {key for section, key in commented if section == "POSTGRES"} == set(
        config._POSTGRES_KEYS
    ) | {"LISTEN_URL"}
    assert ("SERVER", "WORKERS") in commented  # the default depends on the machine
    assert ("API", "CURSOR_SECRET") in commented


def test_the_examples_of_commented_keys_are_valid(tmp_path: Path) -> None:
    """Removing every ';' must give a configuration that loads, with every value changed."""
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"^;\s*", "", text, flags=re.MULTILINE)
    settings = load_settings(path=write_ini(tmp_path, uncommented), environ={})
    assert settings.database.source == "[POSTGRES]"
    assert settings.cors.enabled
    assert settings.api.exclude != ()
    assert settings.api.cursor_secret != ""
    assert "change-me" not in repr(settings)


def test_the_example_is_not_read_by_default(empty_cwd: Path) -> None:
    assert config.config_path({}) == Path("config.ini")
    assert config.config_path({"APP_CONFIG": "/etc/pgrest.ini"}) == Path("/etc/pgrest.ini")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[POOL]\nMAX_SIZ = 3\n", "[POOL] MAX_SIZ: unknown key"),
        ("[pool]\nMAX_SIZE = 3\n", "[pool]: unknown section (sections are upper case: [POOL])"),
        ("[DATABASE]\nURL = x\n", "[DATABASE]: unknown section"),
    ],
)
def test_a_misspelt_section_or_key_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(path=write_ini(tmp_path, text), environ={})
    assert str(info.value) == expected


# --- [POSTGRES] URL is a host, not a URL (issue 6, item 11) ------------------------------------

@pytest.mark.parametrize("url", [f"postgresql://app:{PASSWORD}@db.internal:5432/shop",
                                 f"postgres://app:{PASSWORD}@db.internal/shop",
                                 f"app:{PASSWORD}@db.internal"])
def test_a_url_in_postgres_url_is_refused_without_echoing_it(tmp_path: Path, url: str) -> None:
    path = write_ini(tmp_path, f"[POSTGRES]\nURL = {url}\n")
    message = config_error(path=path)
    assert message.startswith("[POSTGRES] URL:"), message
    assert "DATABASE_URL" in message
    assert PASSWORD not in message and "db.internal" not in message


def test_a_url_in_the_postgres_url_variable_names_the_variable(empty_cwd: Path) -> None:
    message = config_error(POSTGRES_URL=f"postgresql://app:{PASSWORD}@db/shop")
    assert message.startswith("POSTGRES_URL:"), message
    assert "DATABASE_URL" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("url", [
    "postgresql://app:p@ssw0rd@db.internal:5432/shop",  # libpq: password "p", host "ssw0rd@db..."
    "host=ssw0rd@db.internal user=app",
])
def test_an_at_sign_in_the_host_is_refused_without_echoing_it(empty_cwd: Path, url: str) -> None:
    message = config_error(DATABASE_URL=url)
    assert message.startswith("DATABASE_URL:"), message
    assert "percent-encoded" in message
    assert "ssw0rd" not in message


@pytest.mark.parametrize("param", ["password", "sslpassword"])
def test_secret_libpq_parameters_are_masked(empty_cwd: Path, param: str) -> None:
    dsn = f"host=db user=app sslmode=require sslkey=/etc/key.pem {param}={PASSWORD}"
    safe = load_settings(environ={"DATABASE_URL": dsn}).database.safe_dsn
    assert PASSWORD not in safe
    assert f"{param}=***" in safe
    assert "sslkey=/etc/key.pem" in safe  # a path, not a secret: still shown


def _libpq_parameters() -> list[tuple[str, str]]:
    """``(keyword, dispchar)`` of every connection parameter the libpq psycopg2 uses knows."""
    import ctypes

    libpq = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                 if "/libpq" in line)
    lib = ctypes.CDLL(libpq)

    class Option(ctypes.Structure):
        _fields_ = [
            *((name, ctypes.c_char_p)
              for name in ("keyword", "envvar", "compiled", "val", "label", "dispchar")),
            ("dispsize", ctypes.c_int),
        ]

    lib.PQconndefaults.restype = ctypes.POINTER(Option)
    options = lib.PQconndefaults()
    found = []
    index = 0
    while options[index].keyword:
        found.append((options[index].keyword.decode(), options[index].dispchar.decode()))
        index += 1
    lib.PQconninfoFree(options)
    return found


def test_every_parameter_libpq_marks_as_a_password_is_masked() -> None:
    parameters = _libpq_parameters()
    secret = [name for name, dispchar in parameters if dispchar == "*"]
    assert {"password", "sslpassword"} <= set(secret), parameters
    for name in secret:
        masked = config.mask_dsn(f"host=db {name}={PASSWORD}")
        assert PASSWORD not in masked and f"{name}=***" in masked
    # Names a newer libpq knows (PostgreSQL 18: OAuth, SCRAM pass-through keys) are masked too.
    for name in config.SECRET_DSN_PARAMS:
        assert config._is_secret_param(name)
    for name, dispchar in parameters:
        if dispchar != "*" and name not in config.SECRET_DSN_PARAMS:  # libpq 18 marks SCRAM "D"
            assert not config._is_secret_param(name), name  # nothing useful hidden


# --- ranges (item 14) --------------------------------------------------------------------------

def _numeric_fields() -> list[tuple[str, config._Key]]:
    """Every key whose setting is a number, with its section's group name."""
    found = []
    defaults = Settings()
    for group, keys in config._KEYS.items():
        for spec in keys:
            value = getattr(getattr(defaults, group), spec.attr)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found.append((group, spec))
    return found


def test_every_numeric_key_has_both_bounds() -> None:
    numeric = _numeric_fields()
    assert len(numeric) >= 14
    for _group, spec in numeric:
        assert isinstance(spec.parse, config._Number), spec.env
        assert spec.parse.maximum is not None, f"{spec.env} has no upper bound"


def test_every_numeric_key_refuses_a_value_above_its_bound_naming_the_key(
    empty_cwd: Path,
) -> None:
    for _group, spec in _numeric_fields():
        assert isinstance(spec.parse, config._Number)
        maximum = spec.parse.maximum
        assert maximum is not None
        too_big = str(int(maximum) + 1)
        message = config_error(**{spec.env: too_big})
        assert message.startswith(f"{spec.env}: must be"), message
        assert "between" in message


def test_every_numeric_key_accepts_its_bounds(empty_cwd: Path) -> None:
    # Keys checked against each other, set so that either bound of the other passes.
    lenient = {"POOL_MIN_SIZE": "0", "POOL_MAX_SIZE": "1000",
               "API_DEFAULT_LIMIT": "1", "API_MAX_ROWS": "100000"}
    for group, spec in _numeric_fields():
        assert isinstance(spec.parse, config._Number)
        for bound in (spec.parse.minimum, spec.parse.maximum):
            value = int(bound) if spec.parse.whole else float(bound)
            settings = load_settings(environ={**lenient, spec.env: str(value)})
            assert getattr(getattr(settings, group), spec.attr) == value, spec.env


@pytest.mark.parametrize(
    ("environ", "key", "bound"),
    [
        # PostgreSQL's statement_timeout is a C int of milliseconds
        ({"POOL_STATEMENT_TIMEOUT": "2147483648"}, "POOL_STATEMENT_TIMEOUT", "2147483647"),
        ({"POOL_STATEMENT_TIMEOUT": "99999999999999999999"}, "POOL_STATEMENT_TIMEOUT", "0 and"),
        ({"POOL_MAX_SIZE": "100000"}, "POOL_MAX_SIZE", "1000"),
        ({"POOL_ACQUIRE_TIMEOUT": "1e9"}, "POOL_ACQUIRE_TIMEOUT", "3600"),
        ({"POOL_CONNECT_TIMEOUT": "1e12"}, "POOL_CONNECT_TIMEOUT", "3600"),
        ({"POOL_MAX_LIFETIME": "1e308"}, "POOL_MAX_LIFETIME", "604800"),
        ({"SERVER_TIMEOUT": "10000000"}, "SERVER_TIMEOUT", "86400"),
        ({"API_MAX_EXPORT_ROWS": str(2**63)}, "API_MAX_EXPORT_ROWS", str(2**63 - 1)),
    ],
)
def test_out_of_range_values_are_one_line_naming_the_key(
    empty_cwd: Path, environ: dict[str, str], key: str, bound: str
) -> None:
    message = config_error(**environ)
    assert message.startswith(f"{key}: must be"), message
    assert bound in message


# --- DATABASE_URL's port and integer parameters (items 13, 15) ---------------------------------

@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{PASSWORD}@db:abc/shop",
        f"postgresql://app:{PASSWORD}@db:70000/shop",
        f"postgresql://app:{PASSWORD}@db:0/shop",
        f"host=db port=5432x password={PASSWORD}",
        f"postgresql://app:{PASSWORD}@db1:5432,db2:x/shop",
        # An unencoded "/" in the password: libpq takes part of the password for the port.
        "postgresql://app:Xq9/zz@db:5432/shop",
    ],
)
def test_a_port_that_is_not_a_number_is_a_start_up_error(empty_cwd: Path, url: str) -> None:
    message = config_error(DATABASE_URL=url)
    assert message.startswith("DATABASE_URL: the port"), message
    assert PASSWORD not in message
    assert "Xq9" not in message


@pytest.mark.parametrize("url", ["postgresql://app@db:5432/shop", "host=db port=5432",
                                 "postgresql://db1:5432,db2:5433/shop",
                                 "postgresql:///shop?host=/run/pg", "host=db1,db2 port=,5433"])
def test_good_ports_are_accepted(empty_cwd: Path, url: str) -> None:
    assert load_settings(environ={"DATABASE_URL": url}).database.dsn == url


@pytest.mark.parametrize(
    ("param", "value"),
    [("connect_timeout", "abc"), ("connect_timeout", "0"), ("connect_timeout", "-1"),
     ("keepalives", "2"), ("keepalives_idle", "x"), ("tcp_user_timeout", "2147483648")],
)
def test_integer_parameters_of_database_url_are_checked(
    empty_cwd: Path, param: str, value: str
) -> None:
    message = config_error(DATABASE_URL=f"host=db password={PASSWORD} {param}={value}")
    assert message.startswith(f"DATABASE_URL: {param} must be an integer"), message
    assert PASSWORD not in message


# --- misspelt environment variables (item 15) --------------------------------------------------

def test_variables_with_our_prefixes_that_match_no_key_are_reported() -> None:
    warnings = config.unknown_variables({
        "POOL_MAXSIZE": "20",
        "POSTGRES_PASSWORD": PASSWORD,
        "API_CURSOR_SECRETS": PASSWORD,
        "CORS_ORIGIN": "https://a.example",
        "AUTH_NOTHING_LIKE_IT": "x",
        "SERVER_WORKERS": "2",  # known
        "POSTGRES_PW": PASSWORD,  # known
        "PATH": "/usr/bin",  # not ours
        "PGHOST": "db",
        "DATABASE_URL": "host=db",
    })
    text = "\n".join(warnings)
    assert PASSWORD not in text
    assert len(warnings) == 5, warnings
    by_name = {w.split()[2]: w for w in warnings}
    assert "did you mean POOL_MAX_SIZE?" in by_name["POOL_MAXSIZE"]
    assert "did you mean POSTGRES_PW?" in by_name["POSTGRES_PASSWORD"]
    assert "did you mean API_CURSOR_SECRET?" in by_name["API_CURSOR_SECRETS"]
    assert "did you mean CORS_ORIGINS?" in by_name["CORS_ORIGIN"]
    assert "did you mean" not in by_name["AUTH_NOTHING_LIKE_IT"]


def test_every_key_is_a_known_variable() -> None:
    known = config.known_variables()
    assert {f"{s}_{k}" for s, k in known_keys()} == set(known)
    assert config.unknown_variables({name: "1" for name in known}) == []


# --- one Settings object per process (item 18) -------------------------------------------------

@pytest.fixture
def no_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_process_settings", None)


def test_process_settings_are_loaded_once_and_then_shared(
    no_process_settings: None, empty_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Settings] = []
    real = config.load_settings

    def counting_load(*args: object, **kwargs: object) -> Settings:
        loads.append(real(environ={"POOL_MAX_SIZE": "7"}))
        return loads[-1]

    monkeypatch.setattr(config, "load_settings", counting_load)
    first = config.process_settings()
    assert config.process_settings() is first
    assert len(loads) == 1 and first.pool.max_size == 7


def test_set_process_settings_is_what_the_process_then_uses(no_process_settings: None) -> None:
    mine = Settings(cors=CorsSettings(origins=("https://a.example",)))
    assert config.set_process_settings(mine) is mine
    assert config.process_settings() is mine


def test_with_embedded_dsn_points_loaded_settings_at_the_started_server(empty_cwd: Path) -> None:
    settings = load_settings(environ={"POOL_MAX_SIZE": "4"})
    assert settings.database.dsn is None
    started = config.with_embedded_dsn(settings, {EMBEDDED_DSN_ENV: "host=/tmp/s port=5"})
    assert started.database.dsn == "host=/tmp/s port=5" and started.database.embedded
    assert started.pool is settings.pool  # nothing else read again
    assert config.with_embedded_dsn(settings, {}) is settings
    configured = load_settings(environ={"DATABASE_URL": "host=db"})
    assert config.with_embedded_dsn(configured, {EMBEDDED_DSN_ENV: "host=/x"}) is configured
