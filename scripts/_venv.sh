# Sourced by scripts/serve, scripts/test and scripts/lock: a project virtualenv holding one of the
# hashed locks (requirements*.txt, made by scripts/lock), reinstalled only when that lock changes.
# Packages that no lock lists any more are removed, so a stale one cannot hide a missing pin.
# Needs nothing but python3 (3.11+) and PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
LOCK="$1"
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "$PYTHON is $("$PYTHON" -V 2>&1): pgrest needs Python 3.11 or newer (set PYTHON=...)" >&2
    exit 1
  fi
  echo "creating virtualenv in $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(basename "$LOCK").sha"
WANT="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "installing $LOCK into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r "$LOCK"
  "$VENV/bin/python" "$ROOT/scripts/_prune.py" requirements*.txt
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
