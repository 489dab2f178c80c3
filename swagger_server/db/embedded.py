"""An embedded PostgreSQL server in a project folder, for running with no database configured.

It uses the PostgreSQL binaries that the ``pgserver`` wheel ships, so a machine needs nothing but
Python; that wheel is an optional extra (requirements-embedded.txt), imported only when a server
is started: the production image does not ship it. Running as root, the server runs as an
unprivileged system user, as PostgreSQL requires.

Nobody but its owner gets in: it listens on a Unix socket in a folder only the server's user may
enter (its data folder, or a 0700 folder of its own under the temp dir when the data folder's path
is too long for a socket), and on 127.0.0.1 only when asked; every connection must give the
superuser's password (SCRAM), generated on first start and kept in ``.pgrest-password`` (0600) in
the data folder. A data folder made by an older pgrest, which trusted every local connection,
gets its password and ``pg_hba.conf`` on its next start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import psycopg2.extensions

from swagger_server.config import EMBEDDED_DSN_ENV, Settings, mask_dsn
from swagger_server.db import demo

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"  # the same unprivileged user pgserver itself creates when run as root
SUPERUSER = "postgres"
PASSWORD_FILE = ".pgrest-password"  # noqa: S105 (a file name, not a password)
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
_SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
# pgrest owns the embedded server's pg_hba.conf: the password, whatever the way in.
HBA_CONF = """\
# Written by pgrest (swagger_server/db/embedded.py); rewritten on start if it differs.
# Every connection gives the superuser's password, kept in .pgrest-password.
local   all   all                 scram-sha-256
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""
NO_PGSERVER = (
    "no database configured: set DATABASE_URL (the embedded demo PostgreSQL needs pgserver, "
    "which is not installed: pip install -r requirements-embedded.txt)"
)


class EmbeddedError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


class EmbeddedUnavailable(EmbeddedError):
    """pgserver is not installed (the production image): a database must be configured."""


def _pgserver() -> tuple[ModuleType, Path]:
    """pgserver's helpers and the folder of its binaries, imported on first use."""
    try:
        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR; not ours to fix
            warnings.simplefilter("ignore")
            from pgserver import utils
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise EmbeddedUnavailable(NO_PGSERVER) from None
    return utils, Path(POSTGRES_BIN_PATH)


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, 7677): the server is told
    this, never the password, so no log or error of the server can show it."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt).decode()}$"
            f"{b64(stored_key).decode()}:{b64(server_key).decode()}")


class EmbeddedPostgres:
    """One PostgreSQL server owned by this object: ``start()``, ``stop()``, ``dsn``."""

    def __init__(self, data_dir: Path | str, *, port: int = 5432, listen_tcp: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.listen_tcp = listen_tcp
        self.log_file = self.data_dir / "postgres.log"
        self.password_file = self.data_dir / PASSWORD_FILE
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
    def password(self) -> str | None:
        """The superuser's password, once ``start()`` has made it."""
        try:
            return self.password_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    @property
    def dsn(self) -> str:
        """How to connect, password included: never log it (``mask_dsn``)."""
        host = "127.0.0.1" if self.listen_tcp else str(self.socket_dir)
        params = {"host": host, "port": self.port, "user": SUPERUSER, "dbname": "postgres"}
        password = self.password
        if password:
            params["password"] = password
        return psycopg2.extensions.make_dsn(**params)

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def start(self) -> str:
        """Initialise the folder if new, start the server unless it runs; return its DSN."""
        _, bin_path = _pgserver()  # first: a clear error when the extra is not installed
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("embedded PostgreSQL: initialising %s", self.data_dir)
            # Trust only until _require_password() below, with no server listening.
            self._run(
                [str(bin_path / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--no-sync"]
            )
            self.created = True
        running = self.is_running()
        self._require_password(running)
        if running:
            log.info("embedded PostgreSQL already running in %s: using it", self.data_dir)
        else:
            self._start_server()
            self.started = True
        log.info("embedded PostgreSQL ready: data %s, %s", self.data_dir, mask_dsn(self.dsn))
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        self.started = False
        if self.is_running():
            log.info("embedded PostgreSQL: stopping %s", self.data_dir)
            self._pg_ctl("stop", "-w", "-m", mode)

    def _require_password(self, running: bool) -> None:
        """Give the superuser a password and make pg_hba.conf ask for it, unless done already.

        Done offline, in single-user mode: no server listens while the folder still trusts.
        Each step may be repeated, so a start interrupted half-way is finished by the next one.
        """
        hba = self.data_dir / "pg_hba.conf"
        if self.password and hba.read_text(encoding="utf-8") == HBA_CONF:
            return
        if running:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {self.data_dir} is running without a password "
                f"(made by an older pgrest): stop it (pg_ctl stop -D {self.data_dir}) and start "
                "again to set one"
            )
        log.info("embedded PostgreSQL: setting the superuser's password in %s", self.data_dir)
        password = self.password or self._write_private(self.password_file,
                                                        secrets.token_urlsafe(32))
        _, bin_path = _pgserver()
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}';\n"
        result = self._run([str(bin_path / "postgres"), "--single", "-D", str(self.data_dir),
                            SUPERUSER], stdin=statement)
        if "ERROR" in result.stdout:
            raise EmbeddedError(f"could not set the embedded server's password: {result.stdout}")
        self._write_private(hba, HBA_CONF)

    def _write_private(self, path: Path, text: str) -> str:
        """Write ``text`` to ``path`` (0600, the server's user), atomically; return ``text``."""
        temporary = path.with_name(path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        descriptor = os.open(temporary, flags, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(temporary, entry.pw_uid, entry.pw_gid)
        os.replace(temporary, path)
        return text

    def _private_socket_dir(self) -> Path:
        """The socket's folder: the data folder, or one under the temp dir that only the server's
        user may enter (made so, or refused when someone else owns it)."""
        sockets = self.socket_dir
        if sockets == self.data_dir:
            return sockets
        owner = pwd.getpwnam(self._run_as).pw_uid if self._run_as else os.geteuid()
        sockets.mkdir(mode=0o700, exist_ok=True)
        info = sockets.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise EmbeddedError(f"socket folder {sockets} is not a folder: remove it")
        if info.st_uid == os.geteuid() != owner:  # made by root for the server's user
            os.chown(sockets, owner, -1)
            info = sockets.lstat()
        if info.st_uid != owner:
            raise EmbeddedError(
                f"socket folder {sockets} belongs to uid {info.st_uid}, not the server's user: "
                "remove it, or use a shorter EMBEDDED_DATA_DIR"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            sockets.chmod(0o700)
        return sockets

    def _start_server(self) -> None:
        sockets = self._private_socket_dir()
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
        _, bin_path = _pgserver()
        return self._run([str(bin_path / "pg_ctl"), "-D", str(self.data_dir), *args],
                         check=check)

    def _run(self, argv: list[str], check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # Files for output: a pipe held open by the forked postmaster would hang pg_ctl.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as given:
            given.write(stdin or "")
            given.seek(0)
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, text=True, user=self._run_as,
                stdin=given, check=False,
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
        pg_utils, bin_path = _pgserver()
        pg_utils.ensure_user_exists(self._run_as)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pg_utils.ensure_prefix_permissions(self.data_dir)
        # The unprivileged user must reach and run the bundled binaries and libraries.
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        pg_utils.ensure_prefix_permissions(bin_path)
        pg_utils.ensure_folder_permissions(bin_path, readable)
        libraries = bin_path.parent / "lib"
        pg_utils.ensure_folder_permissions(libraries, stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(self._run_as)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)


# The server this process started, kept here rather than by the caller: gunicorn re-executes
# gunicorn.conf.py on SIGHUP, and a handle kept there would be lost (the server then outlived
# the master). This module is not re-executed.
_owned: EmbeddedPostgres | None = None


def stop_owned() -> None:
    """Stop the server this process started, if any (the gunicorn master's ``on_exit``)."""
    global _owned
    server, _owned = _owned, None
    if server is not None:
        server.stop()


def start_if_needed(settings: Settings) -> EmbeddedPostgres | None:
    """Start the embedded server when no database is configured; publish its DSN to children.

    A configured database (``DATABASE_URL`` or ``[POSTGRES]``) is never touched by this path.
    """
    if not settings.database.embedded or os.environ.get(EMBEDDED_DSN_ENV):
        return None
    server = EmbeddedPostgres(settings.embedded.data_dir)
    dsn = server.start()
    demo.seed_embedded(dsn)  # the demo shop (swagger_server/db/demo.py), once; never raises
    os.environ[EMBEDDED_DSN_ENV] = dsn
    log.warning(
        "no database configured: using the embedded PostgreSQL in %s (%s); "
        "set DATABASE_URL to use your own", server.data_dir, mask_dsn(dsn),
    )
    # One found running (another instance, or left over by a crash) is not ours to stop.
    if not server.started:
        return None
    global _owned
    _owned = server
    return server
