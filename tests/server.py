"""A real gunicorn master for end-to-end tests: start it on a free port, wait, talk, stop it.

``gunicorn wsgi:application`` runs with the repository as its working directory, so it reads
``gunicorn.conf.py`` like production does. Settings come from the environment only: the
helper clears every ``SECTION_KEY`` variable it inherited and points ``APP_CONFIG`` at an empty
file, so a developer's ``config.ini`` or shell cannot change what a test runs. The master gets
its own process group; :meth:`GunicornServer.kill` (also run by ``__exit__``) ends the group.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions

from swagger_server.config import EMBEDDED_DSN_ENV, PROJECT_ROOT
from tests.pg import TestDatabase, create_database

# Variables that configure the service; none may leak in from the environment of the tests.
_CONFIG_PREFIXES = ("POOL_", "SERVER_", "API_", "CORS_", "AUTH_", "EMBEDDED_", "POSTGRES_")
_CONFIG_NAMES = ("DATABASE_URL", "APP_CONFIG", EMBEDDED_DSN_ENV, "PROMETHEUS_MULTIPROC_DIR")
_POOL_OPEN = re.compile(r"pool open: pid=(\d+)")
# The worker's "ready" line: uvicorn-worker's, or gunicorn's native asgi worker's.
_LISTENING = re.compile(
    r"\[(\d+)\] \[INFO\] (?:Application startup complete|ASGI server listening)"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    elapsed: float  # seconds, connect to last byte

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def http_get(port: int, path: str, *, timeout: float = 10.0, host: str = "127.0.0.1",
             headers: Mapping[str, str] | None = None) -> Response:
    """One GET on a new TCP connection (``Connection: close``); raises on a timeout."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        found = {name.lower(): value for name, value in resp.getheaders()}
        return Response(resp.status, found, body, time.monotonic() - start)
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class GunicornServer:
    """``with GunicornServer(tmp, {"DATABASE_URL": dsn, "SERVER_WORKERS": "2"}) as srv: ...``"""

    def __init__(self, workdir: Path, env: Mapping[str, str], *, port: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = extra_args
        self.stdout_path = self.workdir / "gunicorn.out"
        self.stderr_path = self.workdir / "gunicorn.err"
        empty_config = self.workdir / "empty.ini"
        empty_config.write_text("")
        base = {
            k: v for k, v in os.environ.items()
            if not k.startswith(_CONFIG_PREFIXES) and k not in _CONFIG_NAMES
        }
        self.env: dict[str, str] = {
            **base,
            "APP_CONFIG": str(empty_config),
            "SERVER_BIND": f"127.0.0.1:{self.port}",
            "SERVER_LOG_LEVEL": "info",  # readiness is read from the log
            "SERVER_TIMEOUT": "10",  # also the graceful timeout: keeps a stuck stop short
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the master and return at once (see :meth:`start` to wait for the workers)."""
        argv = [sys.executable, "-m", "gunicorn", "wsgi:application",
                # gunicorn 27's control socket is one fixed path per user: parallel masters
                # would fight over it.
                "--no-control-socket", *self.extra_args]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self.process

    def start(self, timeout: float = 30.0) -> GunicornServer:
        """Start and wait until every worker has opened its pool and listens.

        Readiness is read from the log, not by sending requests: a test may look at the
        database before the first request.
        """
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> list[int]:
        workers = int(self.env.get("SERVER_WORKERS", "1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited during startup:\n{self.stderr()[-3000:]}")
            pids = self.worker_pids()
            if len(pids) == workers:
                return pids
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn not ready in {timeout}s:\n{self.stderr()[-3000:]}")

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
        """``sig`` to the master alone (as a process manager sends it) and wait for it; kills
        the group and raises if it hangs."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL to the master's process group (the master and its workers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop()
            except Exception:
                self.kill()
        self.kill()  # a worker orphaned by a crashed master would still be in the group

    # ------------------------------------------------------------------ inspection

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """Children of the master that have opened their pool and listen, per the log."""
        try:
            children = {p.pid for p in psutil.Process(self.pid).children()}
        except psutil.NoSuchProcess:
            return []
        log = self.stderr()
        pooled = {int(pid) for pid in _POOL_OPEN.findall(log)}
        listening = {int(pid) for pid in _LISTENING.findall(log)}
        return sorted(children & pooled & listening)

    def children(self) -> list[int]:
        try:
            return sorted(p.pid for p in psutil.Process(self.pid).children())
        except psutil.NoSuchProcess:
            return []

    def get(self, path: str, *, timeout: float = 10.0, **kwargs: Any) -> Response:
        return http_get(self.port, path, timeout=timeout, **kwargs)

    def distinct_pool_pids(self, want: int, timeout: float = 15.0) -> dict[int, dict[str, Any]]:
        """``/pool`` on new connections until ``want`` distinct workers answered (or timeout)."""
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < want and time.monotonic() < deadline:
            resp = self.get("/pool", timeout=5)
            if resp.status == 200:
                stats = resp.json()
                seen[stats["pid"]] = stats
        return seen


# ---------------------------------------------------------------------- the database side

WORKER_APP_NAME = "pgrest worker %"  # application_name of every worker's connections


def _query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


def run_sql(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a new autocommit connection (test setup, pg_stat_activity); its rows."""
    return _query(dsn, sql, params)


def worker_backends(dsn: str) -> dict[str, int]:
    """Connections of service workers to the database of ``dsn``, by application_name."""
    rows = _query(
        dsn,
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE %s "
        "AND pid <> pg_backend_pid() GROUP BY 1",
        (WORKER_APP_NAME,),
    )
    return {name: count for name, count in rows}


def terminate_worker_backends(dsn: str, timeout: float = 5.0) -> int:
    """``pg_terminate_backend`` every worker connection to this database; wait until gone."""
    killed = _query(
        dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE %s",
        (WORKER_APP_NAME,),
    )[0][0]
    if not wait_for(lambda: not worker_backends(dsn), timeout):
        raise TimeoutError(f"worker backends still there after {timeout}s: {worker_backends(dsn)}")
    return int(killed)


@contextlib.contextmanager
def scratch_database(admin: TestDatabase, prefix: str) -> Iterator[str]:
    """A new database on the server of ``admin``, dropped afterwards; yields its DSN."""
    dsn = create_database(admin, prefix)
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    try:
        yield dsn
    finally:
        with contextlib.closing(admin.connect()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
