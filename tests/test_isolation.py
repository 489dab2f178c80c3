"""Tests never read the developer's configuration: a ``config.ini`` in the project (which the README
tells them to create) or ``SECTION_KEY`` variables in their shell change nothing a test sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swagger_server.config import PROJECT_ROOT, Settings, load_settings
from tests.conftest import service_variables

# A config.ini that breaks every test reading it: a database that is not there, a pool of one.
HOSTILE_INI = """\
[POSTGRES]
URL = 127.0.0.1
PORT = 1
[POOL]
MAX_SIZE = 1
MIN_SIZE = 1
[EMBEDDED]
DATA_DIR = /nonexistent/pgdata
"""
HOSTILE_ENV = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "POOL_MAX_SIZE": "0",
               "API_MAX_ROWS": "1", "SERVER_WORKERS": "99"}


def test_the_session_points_app_config_at_an_empty_file(no_developer_config: Path) -> None:
    assert os.environ["APP_CONFIG"] == str(no_developer_config)
    assert no_developer_config.read_text(encoding="utf-8") == ""


def test_service_variables_are_the_sections_keys() -> None:
    environ = {"POOL_MAX_SIZE": "1", "API_MAX_ROWS": "1", "POSTGRES_PW": "x", "DATABASE_URL": "x",
               "APP_CONFIG": "x", "PATH": "/bin", "POOLSIDE": "x", "TEST_DATABASE_URL": "x",
               "PROMETHEUS_MULTIPROC_DIR": "/tmp/theirs"}
    assert sorted(service_variables(environ)) == [
        "API_MAX_ROWS", "APP_CONFIG", "DATABASE_URL", "POOL_MAX_SIZE", "POSTGRES_PW",
        "PROMETHEUS_MULTIPROC_DIR"]


def test_a_config_ini_in_the_working_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.ini").write_text(HOSTILE_INI, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    defaults = Settings()
    assert settings.database.source == "embedded"  # not the hostile [POSTGRES] URL
    assert (settings.pool, settings.embedded) == (defaults.pool, defaults.embedded)


def _project_copy(root: Path) -> Path:
    copy = root / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("swagger_server", "swagger", "tests"):
        shutil.copytree(PROJECT_ROOT / folder, copy / folder, ignore=ignore)
    for name in ("pyproject.toml", "wsgi.py", "gunicorn.conf.py"):
        shutil.copy2(PROJECT_ROOT / name, copy / name)
    return copy


@pytest.mark.e2e
def test_the_embedded_tests_pass_with_a_hostile_config_ini_and_shell(tmp_path: Path) -> None:
    """The reported failure: tests/test_embedded.py, run where the developer has a config.ini
    naming their database (and variables in their shell), still passes."""
    copy = _project_copy(tmp_path)
    (copy / "config.ini").write_text(HOSTILE_INI, encoding="utf-8")
    env = {**os.environ, **HOSTILE_ENV}
    env.pop("APP_CONFIG")  # what a developer's shell has: no APP_CONFIG
    selected = [f"tests/test_embedded.py::{name}" for name in (
        "test_with_nothing_configured_it_starts_and_publishes_the_dsn",
        "test_a_configured_database_is_never_touched",
    )]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selected],
        cwd=copy, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-2000:]
