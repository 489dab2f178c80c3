"""Uninstall from this interpreter's environment every package that none of the given locks lists
(pip, setuptools and wheel excepted): what a lock dropped must not linger in the venv.

Usage: python scripts/_prune.py requirements.txt requirements-dev.txt ...
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

KEEP = {"pip", "setuptools", "wheel"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(locks: list[str]) -> set[str]:
    names = set()
    for lock in locks:
        for line in Path(lock).read_text(encoding="utf-8").splitlines():
            match = _PIN.match(line)
            if match:
                names.add(canonical(match.group(1)))
    return names


def main(locks: list[str]) -> None:
    wanted = locked_names(locks) | KEEP
    installed = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    stale = sorted(installed - wanted)
    if stale:
        print(f"removing packages no lock lists: {' '.join(stale)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *stale],
                       check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
