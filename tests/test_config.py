"""Configuration: defaults, config.ini, environment, DATABASE_URL, errors, secrets, the example.

Every test passes ``environ`` explicitly, so none depends on the real environment.
"""

from __future__ import annotations

import dataclasses
import os
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
    assert server.workers == (os.cpu_count() or 2)
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
    )
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
