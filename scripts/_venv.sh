# Sourced by scripts/serve and scripts/test: a project virtualenv with the pinned requirements,
# reinstalled only when a requirements file changes. Needs nothing but python3 (3.10+).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
REQS="$1"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv in $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.requirements-$(basename "$REQS").sha"
WANT="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "installing $REQS into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
