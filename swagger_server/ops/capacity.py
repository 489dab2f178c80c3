"""How much the service may use: the CPUs this process may run on, and whether the workers'
pools fit the database server's connection budget.

``os.cpu_count()`` is the host's count: in a container limited to 2 CPUs on a 64-core host,
64 workers of 10 connections each would ask the database for 640 connections.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

import psycopg2

log = logging.getLogger(__name__)

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The master's one look at the server: short, so that a database that is down delays the
# start by seconds at most (and never stops it).
BUDGET_CONNECT_TIMEOUT = 3


def available_cpus(proc_cgroup: Path = PROC_CGROUP, cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask and its cgroup's CPU quota, whichever is
    smaller (a fractional quota rounded up), at least 1."""
    count = _affinity()
    quota = cgroup_cpu_limit(proc_cgroup, cgroup_root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(proc_cgroup: Path = PROC_CGROUP,
                     cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup, or ``None`` when unlimited or unknown.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") of the process's cgroup and of each
    ancestor (the tightest wins). cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the
    cpu controller (-1 = unlimited). Inside a container the cgroup is usually mounted as the root.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.strip().lstrip("/")
        if hierarchy == "0" and controllers == "":
            limits += _v2_limits(cgroup_root, relative)
        elif "cpu" in controllers.split(","):
            limit = _v1_limit(cgroup_root / controllers, relative)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _v2_limits(root: Path, relative: str) -> list[float]:
    limits = []
    folder = root / relative if relative else root
    while True:
        limit = _v2_limit(folder / "cpu.max")
        if limit is not None:
            limits.append(limit)
        if folder == root or root not in folder.parents:
            return limits
        folder = folder.parent


def _v2_limit(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return _ratio(quota, period)


def _v1_limit(controller: Path, relative: str) -> float | None:
    # The process's own path, else the mount root (a container sees its cgroup as the root
    # while /proc/self/cgroup may still show the host's path).
    for folder in (controller / relative, controller):
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        return _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


# --- the connection budget ---------------------------------------------------------------------

_BUDGET_SQL = (
    "SELECT current_setting('max_connections')::int, "
    "current_setting('superuser_reserved_connections')::int, "
    # reserved_connections exists from PostgreSQL 16 on
    "coalesce(current_setting('reserved_connections', true), '0')::int"
)


def connection_budget_warning(dsn: str, workers: int, max_size: int,
                              listeners: int = 0) -> str | None:
    """A warning when the workers' connections exceed what the server admits, else ``None``:
    ``workers x (max_size + listeners)``, ``listeners`` being the connections each worker holds
    outside its pool (the schema-reload listener: 1, or 0 without one).

    One short connection, closed at once (call it before fork). A database that cannot be
    reached is a warning too, never an exception: it must not stop the start.
    """
    try:
        with contextlib.closing(psycopg2.connect(
            dsn, connect_timeout=BUDGET_CONNECT_TIMEOUT, application_name="pgrest start-up check"
        )) as conn, conn.cursor() as cur:
            cur.execute(_BUDGET_SQL)
            max_connections, superuser_reserved, reserved = cur.fetchone()
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"could not check the database's max_connections at start: {reason}"
    return budget_warning(workers, max_size, max_connections, superuser_reserved, reserved,
                          listeners)


def budget_warning(workers: int, max_size: int, max_connections: int,
                   superuser_reserved: int, reserved: int = 0,
                   listeners: int = 0) -> str | None:
    needed = workers * (max_size + listeners)
    budget = max_connections - superuser_reserved - reserved
    if needed <= budget:
        return None
    reserved_text = f"{superuser_reserved} superuser_reserved_connections"
    if reserved:
        reserved_text += f" and {reserved} reserved_connections"
    parts = [f"POOL_MAX_SIZE {max_size}"] if max_size else []
    if listeners:
        parts.append(f"{listeners} schema-reload listener" + ("s" if listeners > 1 else ""))
    per_worker = parts[0] if len(parts) == 1 else f"({' + '.join(parts)})"
    what = "the pools" if max_size else "the schema-reload listeners"
    return (
        f"{what} may need more connections than the database admits: {workers} workers x "
        f"{per_worker} = {needed}, but max_connections {max_connections} minus "
        f"{reserved_text} leaves {budget} (for every client, not just this service): "
        "lower SERVER_WORKERS or POOL_MAX_SIZE, or raise max_connections"
    )
