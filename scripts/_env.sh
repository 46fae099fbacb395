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
# closure on a fresh machine, uv ~15 s, with the same versions. Then compileall writes the .pyc files
# pip would: uv leaves them out, and where PYTHONDONTWRITEBYTECODE is set (as on CI) every process
# compiled Beam from source again, 2 s of each job's start (`import pipelines.nightly` 3.9 s ->
# 1.7 s). compileall also covers a venv made before this (the stamp names it); a file it cannot
# compile (a package's Python 2 leftovers) is compiled as before, when imported, if ever.
# The install is constrained by requirements-worker.txt, the versions the remote workers get: the
# tests run with those, not with whatever PyPI released since the lock was written (a package the
# lock does not name, a test tool, follows pyproject's range). A new lock makes a new stamp.
STAMP="$VENV/.installed-$( (cat "$ROOT/pyproject.toml" "$ROOT/requirements-worker.txt"; echo compileall) | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  python -m pip install --quiet uv==0.13.9
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e "$ROOT[test]" -c "$ROOT/requirements-worker.txt"
  python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    >/dev/null 2>&1 || true
  touch "$STAMP"
fi
# The project's own modules too (an editable install runs them from the tree): each test subprocess
# and demo run compiled them again otherwise, 0.17 s of `import pipelines.import_audience`. Quick
# when they are up to date; a stale .pyc is never used (Python checks the source's mtime).
python -m compileall -q "$ROOT/pipelines" "$ROOT/transforms" >/dev/null 2>&1 || true
cd "$ROOT"
