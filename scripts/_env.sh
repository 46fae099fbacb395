# Sourced by scripts/demo and scripts/test: make (once) and activate the project's virtualenv.
# A fresh machine needs only Python 3.11; everything else comes from pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUDIENCE_SYNC_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# Installed with uv (pinned, as for the Airflow venv): pip took ~95 s to resolve and install this
# closure on a fresh machine, uv ~15 s, with the same versions.
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  python -m pip install --quiet uv==0.13.9
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e "$ROOT[test]"
  touch "$STAMP"
fi
cd "$ROOT"
