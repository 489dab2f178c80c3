"""The Dockerfile: hadolint clean, the promises it makes, and the image's files actually serving.

There is no Docker engine here, so the image cannot be built. Instead the tests lint it, read its
instructions, and run ``gunicorn wsgi:application`` from a folder holding exactly what the COPY
lines (filtered by .dockerignore) put into the image, with the image's ENV.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swagger_server.config import PROJECT_ROOT
from tests.pg import TestDatabase

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
START_TIMEOUT = 40.0
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(text: str | None = None) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8") if text is None else text
    result: list[Instruction] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        start = start or number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), start))
        pending, start = "", 0
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def of(keyword: str) -> list[Instruction]:
    return [i for i in instructions() if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in of("ENV"):
        for token in shlex.split(instruction.args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV on line {instruction.line}: use KEY=value, got {token!r}"
            env[key] = value
    return env


def healthcheck_argv() -> list[str]:
    (check,) = of("HEALTHCHECK")
    _, sep, command = check.args.partition("CMD ")
    assert sep, check.args
    return exec_form(command.strip())


# --- .dockerignore, with Docker's rules: last matching pattern wins, "!" re-includes, a pattern
# --- matching a folder matches everything under it, "**" spans folders.

def _pattern(raw: str) -> re.Pattern[str]:
    pattern = raw.strip().strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!"))))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            result = not negated
    return result


def copy_sources() -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of every COPY from the build context."""
    result = []
    for instruction in of("COPY"):
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        assert "--from" not in instruction.args, "multi-stage COPY: extend this test"
        *sources, destination = words
        result.append((sources, destination))
    return result


def context_files(source: str) -> list[Path]:
    path = PROJECT_ROOT / source
    if path.is_file():
        return [path]
    return [p for p in sorted(path.rglob("*")) if p.is_file()]


# --- lint ----------------------------------------------------------------------------------------

def test_hadolint_is_installed() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} missing: pip install -r requirements-dev.txt"


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path: Path) -> None:
    """The linter is really looking: a Dockerfile with known faults fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nRUN cd /app\n", encoding="utf-8")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the latest tag


# --- what the Dockerfile promises --------------------------------------------------------------

def test_base_is_slim_python_3_11() -> None:
    (base,) = of("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]+)?", base.args), base


def test_runs_as_a_non_root_user() -> None:
    users = of("USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), users[-1]
    (cmd,) = of("CMD")
    assert users[-1].line < cmd.line


def test_starts_gunicorn_with_the_connexion_app() -> None:
    (cmd,) = of("CMD")
    assert exec_form(cmd.args) == ["gunicorn", "wsgi:application"]
    assert not of("ENTRYPOINT")
    (workdir,) = of("WORKDIR")
    assert workdir.args.startswith("/")
    # gunicorn reads ./gunicorn.conf.py (worker class, hooks): it must sit in the WORKDIR.
    copied_to_workdir = {
        Path(source).name
        for sources, dest in copy_sources() if dest in (".", "./")
        for source in sources
    }
    assert {"gunicorn.conf.py", "wsgi.py"} <= copied_to_workdir


def test_listens_on_all_interfaces_on_the_exposed_port() -> None:
    env = image_env()
    assert env["SERVER_BIND"] == "0.0.0.0:8000"
    (expose,) = of("EXPOSE")
    assert expose.args.split() == ["8000"]


def test_the_healthcheck_probes_liveness_with_python() -> None:
    (check,) = of("HEALTHCHECK")
    assert "--timeout=" in check.args and "--start-period=" in check.args
    argv = healthcheck_argv()
    assert argv[0] in ("python", "python3")
    assert "/health/live" in " ".join(argv)
    assert not re.search(r"\b(curl|wget)\b", check.args)


def test_requirements_are_installed_in_their_own_cached_layer() -> None:
    steps = instructions()
    copies = [i for i in steps if i.keyword == "COPY"]
    installs = [i for i in steps if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1, installs
    install = installs[0]
    first_copy = copies[0]
    assert shlex.split(first_copy.args)[:-1] == ["requirements.txt"], first_copy
    assert first_copy.line < install.line
    assert all(c.line > install.line for c in copies[1:]), "app files copied before pip install"
    assert "--no-cache-dir" in install.args
    assert "--require-hashes" in install.args  # the lock, every package with its hashes
    assert "-r requirements.txt" in install.args


def test_no_secrets_or_database_are_baked_in() -> None:
    env = image_env()
    assert not {"DATABASE_URL", "POSTGRES_PW", "POSTGRES_URL", "API_CURSOR_SECRET"} & env.keys()
    assert "config.ini" not in " ".join(" ".join(s) for s, _ in copy_sources())


def test_the_image_has_no_embedded_server() -> None:
    assert not any(key.startswith("EMBEDDED_") for key in image_env())
    copied = {Path(source).name for sources, _ in copy_sources() for source in sources}
    assert not {"requirements-embedded.txt", "requirements-dev.txt"} & copied
    lock = (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "--hash=sha256:" in lock
    assert not re.search(r"^pgserver==", lock, re.MULTILINE)


def test_the_header_names_the_worker_and_says_how_many() -> None:
    header = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ")[0]
    assert "uvicorn-worker" in header
    assert "native ASGI" not in header  # the seed's header said so; gunicorn.conf.py disagrees
    assert "SERVER_WORKERS" in header and "max_connections" in header
    assert "DATABASE_URL" in header


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    rules = ignore_rules()
    for path in ["config.ini", ".env", ".git/HEAD", ".venv/bin/python", ".pgdata/PG_VERSION",
                 "tests/test_app.py", "bench/bench_pool.py", "requirements-dev.txt",
                 "requirements-embedded.txt", "scripts/lock",
                 "swagger_server/__pycache__/app.cpython-311.pyc", "Dockerfile"]:
        assert ignored(path, rules), f"{path} would be sent to the Docker build"


def test_dockerignore_lets_every_copied_file_through() -> None:
    rules = ignore_rules()
    for sources, _ in copy_sources():
        for source in sources:
            files = [p for p in context_files(source) if "__pycache__" not in p.parts]
            assert files, f"COPY {source}: no such file in the project"
            for path in files:
                relative = path.relative_to(PROJECT_ROOT).as_posix()
                assert not ignored(relative, rules), f"COPY {source}: {relative} is ignored"


# --- the image's files, served ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _world_executable(path: Path) -> bool:
    path = path.resolve()
    if not path.exists() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def _unprivileged_python() -> tuple[str, dict[str, str], str | None]:
    """(interpreter, extra env, user) to run like the image: as a non-root user.

    As root, that needs an interpreter the unprivileged user may execute: the venv's own, or the
    system's Python of the same minor version with the venv's packages on PYTHONPATH. Failing
    both, the current user (the USER instruction is checked above all the same).
    """
    if os.geteuid() != 0:
        return sys.executable, {}, None
    packages = sysconfig.get_paths()["purelib"]
    extra = {"PYTHONPATH": packages}
    if _world_executable(Path(sys.executable)) and _world_executable(Path(packages)):
        return sys.executable, {}, UNPRIVILEGED_USER
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if _world_executable(system) and _world_executable(Path(packages)):
        return str(system), extra, UNPRIVILEGED_USER
    return sys.executable, {}, None


def build_image_tree(root: Path) -> Path:
    """A folder with what the COPY lines put in the image, at the WORKDIR."""
    (workdir,) = of("WORKDIR")
    app = root / workdir.args.lstrip("/")
    app.mkdir(parents=True)
    rules = ignore_rules()
    for sources, destination in copy_sources():
        target = app / destination
        for source in sources:
            base = PROJECT_ROOT / source
            for path in context_files(source):
                relative = path.relative_to(PROJECT_ROOT).as_posix()
                if ignored(relative, rules):
                    continue
                if base.is_file():
                    out = target / path.name if destination.endswith("/") else target
                else:
                    out = target / path.relative_to(base)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)
    return app


@dataclass
class Running:
    port: int
    env: dict[str, str]
    python: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()

    def healthcheck(self) -> int:
        argv = healthcheck_argv()
        argv[0] = self.python  # "python" on the image's PATH
        return subprocess.run(argv, env=self.env, capture_output=True, timeout=15,
                              check=False).returncode


def image_tree_env(app: Path, python: str, extra_env: dict[str, str], port: int) -> dict[str, str]:
    """The image's environment, adapted to this machine: loopback only, one worker."""
    return {
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(app.parent),  # gunicorn puts its control socket under $HOME
        "LANG": "C.UTF-8",
        **image_env(),
        "SERVER_BIND": f"127.0.0.1:{port}",
        "SERVER_WORKERS": "1",
        **extra_env,
    }


def without_pgserver(root: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """``extra_env`` plus a ``sitecustomize`` that makes pgserver unimportable: the image does not
    install it (requirements.txt), while the test's virtualenv has it."""
    folder = root / "no-pgserver"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        'import sys\n\nsys.modules["pgserver"] = None  # as if not installed\n', encoding="utf-8"
    )
    path = os.pathsep.join(p for p in (str(folder), extra_env.get("PYTHONPATH")) if p)
    return {**extra_env, "PYTHONPATH": path}


@contextlib.contextmanager
def serve_image_tree(
    app: Path, python: str, extra_env: dict[str, str], user: str | None
) -> Iterator[Running]:
    port = _free_port()
    env = image_tree_env(app, python, extra_env, port)
    log = app.parent / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [python, "-m", "gunicorn", "wsgi:application"], cwd=app, env=env, user=user,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    running = Running(port, env, python, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"gunicorn exited:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if running.get("/health/live")[0] == 200:
                    break
            assert time.monotonic() < deadline, f"not up in {START_TIMEOUT}s:\n{log.read_text()}"
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # what `docker stop` sends
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def image_root() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parent is private to root, and the service user must
    # reach this folder.
    root = Path(tempfile.mkdtemp(prefix="pgrest-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _chown_tree(root: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@pytest.mark.e2e
def test_the_image_files_serve_the_api_with_database_url(
    image_root: Path, database: TestDatabase
) -> None:
    app = build_image_tree(image_root)
    assert {p.name for p in app.iterdir()} >= {"wsgi.py", "gunicorn.conf.py", "swagger",
                                                 "swagger_server", "requirements.txt"}
    env = without_pgserver(image_root, {"DATABASE_URL": database.dsn})
    with serve_image_tree(app, sys.executable, env, None) as server:
        status, headers, body = server.get("/")
        assert (status, json.loads(body)) == (200, [[1]])
        assert headers.get("x-request-id")
        assert server.healthcheck() == 0
    assert server.process.returncode == 0, server.log.read_text()[-3000:]
    assert server.healthcheck() != 0  # and the check notices when the service is gone


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["-m", "gunicorn", "wsgi:application"], ["wsgi.py"]],
                         ids=["gunicorn", "python wsgi.py"])
def test_the_image_files_without_a_database_exit_with_one_clear_line(
    image_root: Path, command: list[str]
) -> None:
    """No demo database in the image: started without DATABASE_URL it says what to set."""
    python, extra, user = _unprivileged_python()
    app = build_image_tree(image_root)
    env = image_tree_env(app, python, without_pgserver(image_root, extra), _free_port())
    if user is not None:  # as the image's USER
        _chown_tree(image_root, user)
    result = subprocess.run(
        [python, *command], cwd=app, env=env, user=user, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "DATABASE_URL" in line]
    assert len(lines) == 1, output
    assert re.search(r"(Error|cannot start): no database configured: set DATABASE_URL", lines[0])
    assert "requirements-embedded.txt" in lines[0]
