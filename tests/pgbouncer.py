"""A real PgBouncer in ``pool_mode = transaction`` in front of the test PostgreSQL.

``scripts/ensure-pgbouncer`` installs Debian's package when it is missing (as root), else the
tests fail saying how to install it: they never skip. PgBouncer refuses to run as root, so as
root it runs as the embedded server's unprivileged user (``pgserver``, who may also enter the
server's private socket folder), or ``nobody``, with its configuration, log and pid file in a
folder of its own (0700, that user's). It listens on a free TCP port of 127.0.0.1 only, no Unix
socket.

Authentication: clients give their own PostgreSQL password (SCRAM-SHA-256). PgBouncer knows it
from the server itself (``auth_query`` on ``pg_shadow`` as the server DSN's user, whose
password is in ``userlist.txt``, 0600) and logs into the server with the client's SCRAM keys
(pass-through), so any login role the tests create works through it, as it would in
production. ``[databases] * =`` forwards every database name to the same server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from swagger_server.config import PROJECT_ROOT
from swagger_server.db.embedded import SYSTEM_USER

ENSURE_PGBOUNCER = PROJECT_ROOT / "scripts" / "ensure-pgbouncer"
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def ensure_pgbouncer() -> str:
    """The pgbouncer binary, installed first when missing (root); a test failure otherwise."""
    done = subprocess.run([str(ENSURE_PGBOUNCER)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{ENSURE_PGBOUNCER} failed: {done.stderr.strip() or done.stdout.strip()}")
    found = shutil.which("pgbouncer") or next(
        (path for path in _CANDIDATES if os.access(path, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{ENSURE_PGBOUNCER} succeeded but no pgbouncer binary was found")
    return found


def _run_as() -> str | None:
    """The unprivileged user PgBouncer runs as when we are root; None: ourselves."""
    if os.geteuid() != 0:
        return None
    for name in (SYSTEM_USER, "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.fail("running as root, but neither the user pgserver nor nobody exists for pgbouncer")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """``with PgBouncer(upstream_dsn, pool_size=2) as bouncer: bouncer.dsn_for(dsn)``."""

    def __init__(self, upstream_dsn: str, *, pool_size: int = 20, max_client_conn: int = 200,
                 extra: dict[str, str] | None = None) -> None:
        self.binary = ensure_pgbouncer()
        self.upstream = psycopg2.extensions.parse_dsn(upstream_dsn)
        self.port = _free_port()
        self.pool_size = pool_size
        self.user = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="pgrest-pgbouncer-"))
        self.log_file = self.folder / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config(max_client_conn, extra or {})

    # ------------------------------------------------------------------ configuration

    def _write_config(self, max_client_conn: int, extra: dict[str, str]) -> None:
        up = self.upstream
        server = " ".join(f"{key}={up[key]}" for key in ("host", "port") if up.get(key))
        auth_user = up.get("user") or "postgres"
        password = up.get("password")
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",  # TCP only: nobody else reaches it through a socket file
            "pool_mode": "transaction",
            "default_pool_size": str(self.pool_size),
            "min_pool_size": "0",
            "max_client_conn": str(max_client_conn),
            "auth_file": str(self.folder / "userlist.txt"),
            "logfile": str(self.log_file),
            "pidfile": str(self.folder / "pgbouncer.pid"),
            "server_login_retry": "1",  # after PostgreSQL restarts: back within a second
            "server_connect_timeout": "5",
            "admin_users": auth_user,
            **extra,
        }
        if password:
            settings.update({
                "auth_type": "scram-sha-256",
                "auth_user": auth_user,
                "auth_query": "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename=$1",
            })
        else:  # a server that trusts its clients: so does its pooler
            settings["auth_type"] = "trust"
        lines = ["[databases]", f"* = {server}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        self._write(self.folder / "pgbouncer.ini", "\n".join(lines) + "\n")
        self._write(self.folder / "userlist.txt",
                    f"{_quote(auth_user)} {_quote(password or '')}\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o700)

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> PgBouncer:
        """Start it and wait until it accepts connections on its port."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [self.binary, str(self.folder / "pgbouncer.ini")], user=self.user,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.folder, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"pgbouncer not listening after {timeout}s:\n{self.log()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: every client and server connection is cut at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> PgBouncer:
        """Kill it and start it again on the same port (a crash and a restart)."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ use

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` (same user, password, database) through this PgBouncer."""
        params = psycopg2.extensions.parse_dsn(dsn)
        params.update(host="127.0.0.1", port=str(self.port))
        return psycopg2.extensions.make_dsn(**params)

    def admin(self, command: str) -> list[tuple[object, ...]]:
        """A command on PgBouncer's admin console (``SHOW POOLS``...), as the auth user."""
        params = dict(self.upstream)
        params.update(host="127.0.0.1", port=str(self.port), dbname="pgbouncer")
        with contextlib.closing(psycopg2.connect(**params, connect_timeout=5)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def pgbouncer(upstream_dsn: str, **kwargs: object) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(upstream_dsn, **kwargs)  # type: ignore[arg-type]
    try:
        yield bouncer.start()
    finally:
        bouncer.close()
