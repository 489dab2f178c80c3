"""An embedded PostgreSQL server in a project folder, for running with no database configured.

It uses the PostgreSQL binaries that the ``pgserver`` wheel ships, so a machine needs nothing but
Python. It listens on a Unix socket in its data folder (and on 127.0.0.1 when asked). Running as
root, the server runs as an unprivileged system user, as PostgreSQL requires.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import psycopg2.extensions

from swagger_server import demo
from swagger_server.config import EMBEDDED_DSN_ENV, Settings

with warnings.catch_warnings():  # importing pgserver warns about XDG_RUNTIME_DIR; not ours to fix
    warnings.simplefilter("ignore")
    from pgserver import utils as pg_utils
    from pgserver._commands import POSTGRES_BIN_PATH

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"  # the same unprivileged user pgserver itself creates when run as root
SUPERUSER = "postgres"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


class EmbeddedError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


class EmbeddedPostgres:
    """One PostgreSQL server owned by this object: ``start()``, ``stop()``, ``dsn``."""

    def __init__(self, data_dir: Path | str, *, port: int = 5432, listen_tcp: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.listen_tcp = listen_tcp
        self.log_file = self.data_dir / "postgres.log"
        self.created = False  # initdb ran in this start()
        self.started = False  # this object started the server (rather than finding it running)
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> Path:
        socket = self.data_dir / f".s.PGSQL.{self.port}"
        if len(str(socket)) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pgrest-{digest}"

    @property
    def dsn(self) -> str:
        host = "127.0.0.1" if self.listen_tcp else str(self.socket_dir)
        return psycopg2.extensions.make_dsn(
            host=host, port=self.port, user=SUPERUSER, dbname="postgres"
        )

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def start(self) -> str:
        """Initialise the folder if new, start the server unless it runs; return its DSN."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("embedded PostgreSQL: initialising %s", self.data_dir)
            self._run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--no-sync"]
            )
            self.created = True
        if self.is_running():
            log.info("embedded PostgreSQL already running in %s: using it", self.data_dir)
        else:
            self._start_server()
            self.started = True
        log.info("embedded PostgreSQL ready: data %s, %s", self.data_dir, self.dsn)
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        self.started = False
        if self.is_running():
            log.info("embedded PostgreSQL: stopping %s", self.data_dir)
            self._pg_ctl("stop", "-w", "-m", mode)

    def _start_server(self) -> None:
        sockets = self.socket_dir
        if sockets != self.data_dir:
            sockets.mkdir(mode=0o777, exist_ok=True)
            sockets.chmod(0o777)
        listen = "127.0.0.1" if self.listen_tcp else ""
        options = f"-h '{listen}' -k '{sockets}' -p {self.port} -c fsync=off"
        result = self._pg_ctl("start", "-w", "-t", "30", "-l", str(self.log_file), "-o", options,
                              check=False)
        if result.returncode != 0:
            exists = self.log_file.exists()
            tail = self.log_file.read_text(errors="replace")[-2000:] if exists else ""
            raise EmbeddedError(
                f"embedded PostgreSQL did not start in {self.data_dir}: "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), *args],
                         check=check)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        # Files for output: a pipe held open by the forked postmaster would hang pg_ctl.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, text=True, user=self._run_as,
                stdin=subprocess.DEVNULL, check=False,
            )
            out.seek(0)
            output = out.read()
        completed = subprocess.CompletedProcess(argv, result.returncode, output, output)
        if check and result.returncode != 0:
            name = Path(argv[0]).name
            raise EmbeddedError(f"{name} failed ({result.returncode}): {output.strip()}")
        return completed

    def _prepare_permissions(self) -> None:
        if self._run_as is None:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            return
        pg_utils.ensure_user_exists(self._run_as)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pg_utils.ensure_prefix_permissions(self.data_dir)
        # The unprivileged user must reach and run the bundled binaries and libraries.
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        pg_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
        pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
        libraries = POSTGRES_BIN_PATH.parent / "lib"
        pg_utils.ensure_folder_permissions(libraries, stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(self._run_as)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)


def start_if_needed(settings: Settings) -> EmbeddedPostgres | None:
    """Start the embedded server when no database is configured; publish its DSN to children.

    A configured database (``DATABASE_URL`` or ``[POSTGRES]``) is never touched by this path.
    """
    if not settings.database.embedded or os.environ.get(EMBEDDED_DSN_ENV):
        return None
    server = EmbeddedPostgres(settings.embedded.data_dir)
    dsn = server.start()
    demo.seed_embedded(dsn)  # the demo shop (swagger_server/demo.py), once; never raises
    os.environ[EMBEDDED_DSN_ENV] = dsn
    log.warning(
        "no database configured: using the embedded PostgreSQL in %s (%s); "
        "set DATABASE_URL to use your own", server.data_dir, dsn,
    )
    # One found running (another instance, or left over by a crash) is not ours to stop.
    return server if server.started else None
