"""The dependency locks: every package pinned with hashes, each lock covering its ``.in`` source
with everything those packages need, one version per package across locks, and the runtime lock
free of what the service does not use (a demo database, uvicorn's reload and websocket extras).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from swagger_server.config import PROJECT_ROOT

# Each lock and the hand-written list it is made from (scripts/lock).
LOCKS = {
    "requirements.txt": "requirements.in",
    "requirements-embedded.txt": "requirements-embedded.in",
    "requirements-dev.txt": "requirements-dev.in",
}
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    marker: str
    hashes: int


def logical_lines(path: Path) -> list[str]:
    """Lines with backslash continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = (line.split(" #")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_lock(name: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    for line in logical_lines(PROJECT_ROOT / name):
        requirement, *hashes = re.split(r"\s+(?=--hash=)", line)
        assert hashes and all(_HASH.fullmatch(h) for h in hashes), f"{name}: no hash: {line}"
        parsed = Requirement(requirement)
        specifiers = list(parsed.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{name}: {requirement}"
        assert not parsed.url and not parsed.extras, f"{name}: {requirement}"
        pin = Pin(canonicalize_name(parsed.name), specifiers[0].version,
                  str(parsed.marker or ""), len(hashes))
        assert pin.name not in pins, f"{name}: {pin.name} twice"
        pins[pin.name] = pin
    return pins


def read_source(name: str) -> list[Requirement]:
    """The requirements of a ``.in`` file, following ``-r`` includes."""
    found: list[Requirement] = []
    for line in logical_lines(PROJECT_ROOT / name):
        if line.startswith("-r "):
            found += read_source(line[3:].strip())
        else:
            assert not line.startswith("-"), f"{name}: unexpected option {line}"
            found.append(Requirement(line))
    return found


def closure(requirements: list[Requirement]) -> dict[str, set[str]]:
    """Every distribution these need here (name -> extras), from the installed metadata."""
    environment = default_environment()
    needed: dict[str, set[str]] = {}
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if name in needed and extras <= needed[name]:
            continue
        active = needed.setdefault(name, set())
        active |= extras
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed here: scripts/test installs the dev lock")
        for raw in requires:
            dependency = Requirement(raw)
            marker = dependency.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in {"", *active}
            ):
                todo.append((canonicalize_name(dependency.name), set(dependency.extras)))
    return needed


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_of_a_lock_is_pinned_with_hashes(lock: str) -> None:
    pins = read_lock(lock)
    assert len(pins) > 10
    assert all(pin.hashes >= 1 for pin in pins.values())


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_a_lock_pins_what_its_source_pins(lock: str, source: str) -> None:
    pins = read_lock(lock)
    for requirement in read_source(source):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{source}: {requirement} missing from {lock}: run scripts/lock"
        assert pins[name].version in requirement.specifier, (
            f"{source} wants {requirement}, {lock} has {pins[name].version}: run scripts/lock"
        )


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_a_lock_holds_everything_its_source_needs(lock: str, source: str) -> None:
    """With --require-hashes pip refuses to install a dependency the lock does not pin."""
    pins = read_lock(lock)
    missing = sorted(set(closure(read_source(source))) - set(pins))
    assert not missing, f"{lock} lacks {missing}: run scripts/lock"


def test_a_package_has_one_version_in_every_lock() -> None:
    versions: dict[str, set[str]] = {}
    for lock in LOCKS:
        for pin in read_lock(lock).values():
            versions.setdefault(pin.name, set()).add(pin.version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}


def test_the_locks_nest_runtime_in_embedded_in_dev() -> None:
    runtime, embedded, dev = (set(read_lock(lock)) for lock in LOCKS)
    assert runtime < embedded < dev


def test_the_runtime_lock_has_no_embedded_server_and_no_unused_extras() -> None:
    runtime = read_lock("requirements.txt")
    unused = {"pgserver", "watchfiles", "websockets", "python-dotenv"}
    assert not unused & set(runtime), sorted(unused & set(runtime))
    assert "pgserver" in read_lock("requirements-embedded.txt")
    # What the service does use, directly or through uvicorn's "auto" choices.
    assert {"connexion", "flask", "gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools",
            "psycopg2-binary", "a2wsgi", "swagger-ui-bundle"} <= set(runtime)


def test_the_lock_parser_rejects_an_unhashed_pin(tmp_path: Path, monkeypatch) -> None:
    """The checks above are real: a lock like the old requirements.txt fails them."""
    (tmp_path / "old.txt").write_text("flask==3.1.3\n", encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", tmp_path)
    with pytest.raises(AssertionError, match="no hash"):
        read_lock("old.txt")


@pytest.mark.parametrize(("script", "lock"), [("serve", "requirements-embedded.txt"),
                                              ("test", "requirements-dev.txt"),
                                              ("lock", "requirements-dev.txt")])
def test_the_scripts_install_a_hashed_lock(script: str, lock: str) -> None:
    text = (PROJECT_ROOT / "scripts" / script).read_text(encoding="utf-8")
    assert f'_venv.sh" {lock}' in text
    venv = (PROJECT_ROOT / "scripts" / "_venv.sh").read_text(encoding="utf-8")
    assert re.search(r"pip install [^\n]*--require-hashes", venv)
