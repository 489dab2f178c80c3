"""swagger_server.ops.capacity: the CPUs this process may use (cgroup files in tmp_path), and the
connection budget check against the real test database (issue 6, item 22)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psycopg2
import pytest

from swagger_server.ops import capacity
from swagger_server.ops.capacity import available_cpus, budget_warning, cgroup_cpu_limit
from tests.pg import TestDatabase
from tests.server import free_port

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_tree(tmp_path: Path, proc_lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    """``/proc/self/cgroup`` with ``proc_lines`` and a cgroup root holding ``files``."""
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_lines)
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, root


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5),
     ("max 100000\n", None), ("garbage\n", None), ("", None)],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, cpu_max: str, limit: float | None) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert cgroup_cpu_limit(proc, root) == limit


def test_cgroup_v2_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "kubepods/cpu.max": "100000 100000\n",
        "kubepods/pod1/cpu.max": "max 100000\n",
        "kubepods/pod1/ctr/cpu.max": "300000 100000\n",
    })
    assert cgroup_cpu_limit(proc, root) == 1.0


@pytest.mark.parametrize(
    "quota_path", ["cpu,cpuacct/docker/abc", "cpu,cpuacct"],  # the host's path, the container's
)
def test_cgroup_v1_cfs_quota(tmp_path: Path, quota_path: str) -> None:
    proc, root = cgroup_tree(
        tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n",
        {f"{quota_path}/cpu.cfs_quota_us": "250000\n",
         f"{quota_path}/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cpu_limit(proc, root) == 2.5


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "3:cpu:/\n", {
        "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_limit(proc, root) is None


def test_no_cgroup_information_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path) is None
    proc, root = cgroup_tree(tmp_path, "0::/\n", {})
    assert cgroup_cpu_limit(proc, root) is None


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("100000 100000\n", 1),  # a quota of 1 CPU: 1 worker, however many CPUs the host has
     ("20000 100000\n", 1),  # a fifth of a CPU: still at least 1
     (f"{AFFINITY * 100000 + 1} 100000\n", AFFINITY),  # a fraction over: the affinity caps
     (f"{64 * 100000} 100000\n", AFFINITY),  # more quota than CPUs: the affinity mask wins
     ("max 100000\n", AFFINITY)],
)
def test_available_cpus_is_the_smaller_of_affinity_and_quota(
    tmp_path: Path, cpu_max: str, expected: int
) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert available_cpus(proc, root) == expected


def test_a_fractional_quota_rounds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    proc, root = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": "250000 100000\n"})
    assert available_cpus(proc, root) == 3


def test_on_this_machine(tmp_path: Path) -> None:
    cpus = available_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert cpus <= AFFINITY


# --- the connection budget ---------------------------------------------------------------------

def test_budget_arithmetic() -> None:
    assert budget_warning(4, 10, 100, 3) is None
    assert budget_warning(97, 1, 100, 3) is None  # exactly full still fits
    message = budget_warning(64, 10, 100, 3)
    assert message is not None
    for part in ("64 workers", "POOL_MAX_SIZE 10", "= 640", "max_connections 100",
                 "3 superuser_reserved_connections", "leaves 97", "SERVER_WORKERS"):
        assert part in message, part
    with_reserved = budget_warning(10, 10, 100, 3, 5)  # PostgreSQL 16's reserved_connections
    assert with_reserved is not None and "5 reserved_connections" in with_reserved
    assert "leaves 92" in with_reserved
    assert budget_warning(9, 10, 100, 3, 5) is None


def test_the_budget_counts_listener_connections() -> None:
    """Each worker's schema-reload listener is one more connection, outside its pool."""
    assert budget_warning(9, 10, 100, 3) is None  # 90 of 97
    message = budget_warning(9, 10, 100, 3, listeners=1)  # 99 of 97
    assert message is not None
    assert "9 workers x (POOL_MAX_SIZE 10 + 1 schema-reload listener) = 99" in message
    # Behind a pooler only the listeners reach PostgreSQL directly.
    assert budget_warning(97, 0, 100, 3, listeners=1) is None
    message = budget_warning(98, 0, 100, 3, listeners=1)
    assert message is not None and "98 workers x 1 schema-reload listener = 98" in message


def _server_budget(dsn: str) -> int:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('max_connections')::int "
                    "- current_setting('superuser_reserved_connections')::int "
                    "- coalesce(current_setting('reserved_connections', true), '0')::int")
        return cur.fetchone()[0]


def _check_backends(dsn: str) -> int:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'pgrest start-up check'")
        return cur.fetchone()[0]


def test_the_budget_of_the_real_server(database: TestDatabase) -> None:
    budget = _server_budget(database.dsn)
    assert capacity.connection_budget_warning(database.dsn, 1, 10) is None
    assert capacity.connection_budget_warning(database.dsn, budget, 1) is None
    message = capacity.connection_budget_warning(database.dsn, budget + 1, 1)
    assert message is not None
    assert f"= {budget + 1}" in message and f"leaves {budget}" in message
    message = capacity.connection_budget_warning(database.dsn, 8, budget)
    assert message is not None and f"8 workers x POOL_MAX_SIZE {budget}" in message
    assert _check_backends(database.dsn) == 0  # its connection is closed at once


def test_a_database_that_is_down_is_a_warning_not_an_error() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=app password=Sup3r-s3cret!pw dbname=x"
    start = time.monotonic()
    message = capacity.connection_budget_warning(dsn, 64, 10)
    assert time.monotonic() - start < capacity.BUDGET_CONNECT_TIMEOUT + 5
    assert message is not None and message.startswith("could not check")
    assert "Sup3r-s3cret!pw" not in message
