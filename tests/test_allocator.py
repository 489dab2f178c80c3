"""The worker's malloc thresholds (swagger_server/ops/allocator.py): a page's buffers are reused,
not mapped afresh and zeroed by the kernel on every request; an operator's settings win."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest

from swagger_server.config import PROJECT_ROOT
from swagger_server.ops import allocator
from tests.pg import TestDatabase, seeded_database
from tests.server import GunicornServer, http_get

# 1000 rows of about 300 bytes of JSON: a page of about 300 KB, over glibc's default 128 KB.
SCHEMA = """
CREATE TABLE wide (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO wide SELECT g, repeat('x', 260) FROM generate_series(1, 1000) g;
"""
PAGE = "/tables/wide/rows?limit=1000"
REQUESTS = 60


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "allocator", SCHEMA)


def faults_per_page(server: GunicornServer) -> float:
    """Minor page faults of the (one) worker per 1000-row page, after a warm-up."""
    [pid] = server.worker_pids()
    for _ in range(10):
        assert http_get(server.port, PAGE).status == 200
    before = _minor_faults(pid)
    for _ in range(REQUESTS):
        response = http_get(server.port, PAGE)
        assert response.status == 200 and len(response.body) > 250_000
    return (_minor_faults(pid) - before) / REQUESTS


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


@pytest.fixture(scope="module")
def served(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    with GunicornServer(tmp_path_factory.mktemp("alloc"),
                        {"DATABASE_URL": dsn, "SERVER_WORKERS": "1"}) as server:
        yield server


@pytest.mark.e2e
def test_a_worker_reuses_the_memory_of_large_pages(served: GunicornServer) -> None:
    # glibc's defaults gave 133-170 faults per page on such a worker (about 600 KB mapped anew).
    assert faults_per_page(served) < 20


@pytest.mark.e2e
def test_the_operators_malloc_settings_win(dsn: str, tmp_path_factory: pytest.TempPathFactory
                                           ) -> None:
    # glibc's default thresholds, fixed by the operator: the worker leaves them alone, and every
    # page maps its buffers afresh again (which is also what the test above would see without
    # the worker's own thresholds).
    env = {"DATABASE_URL": dsn, "SERVER_WORKERS": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    with GunicornServer(tmp_path_factory.mktemp("alloc-operator"), env) as server:
        assert faults_per_page(server) > 50


def test_nothing_is_changed_when_the_operator_tunes_malloc() -> None:
    for environ in ({"MALLOC_MMAP_THRESHOLD_": "1"}, {"MALLOC_TRIM_THRESHOLD_": "1"},
                    {"MALLOC_TOP_PAD_": "1"}, {"MALLOC_MMAP_MAX_": "0"},
                    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1"}):
        assert allocator.keep_large_buffers(environ) is False, environ


def test_the_thresholds_are_set_on_glibc_also_beside_other_tunables() -> None:
    """Never skipped: on a 64-bit glibc (CI's Debian) they are set, elsewhere the function says
    it left malloc alone (4 MiB is over a 32-bit glibc's maximum; musl's mallopt does nothing,
    macOS has none)."""
    expected = platform.libc_ver()[0] == "glibc" and sys.maxsize > 2**32
    # In a process of its own: the test run's malloc stays as it was.
    code = ("from swagger_server.ops import allocator; "
            "print(allocator.keep_large_buffers({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60, check=True)
    assert done.stdout.strip() == str(expected)
