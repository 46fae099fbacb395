# Sourced by scripts/test after _env.sh: make (once) the Airflow virtualenv that tests/test_airflow_dag.py
# runs the DAG with, and export its path as AUDIENCE_SYNC_AIRFLOW_VENV. Airflow lives in its own venv
# (scripts/airflow-requirements.txt, closure pinned in scripts/airflow-constraints.txt), installed with
# uv: pip took 9-10 minutes over this closure (~280 packages, 1.6 GB) on a fresh machine, uv ~20 s;
# --compile-bytecode writes the .pyc files (see _env.sh; this venv is always made afresh), so each
# `airflow` command starts without compiling Airflow from source.
# AUDIENCE_SYNC_SKIP_AIRFLOW=1 skips it (and the test says it was skipped on purpose).
if [ "${AUDIENCE_SYNC_SKIP_AIRFLOW:-}" = "1" ]; then
  echo "scripts/test: AUDIENCE_SYNC_SKIP_AIRFLOW=1: the Airflow DAG test is skipped" >&2
else
  AIRFLOW_VENV="${AUDIENCE_SYNC_AIRFLOW_VENV:-$VENV-airflow}"
  AIRFLOW_STAMP="$AIRFLOW_VENV/.installed-$( (cat "$ROOT/scripts/airflow-requirements.txt" \
    "$ROOT/scripts/airflow-constraints.txt"; echo compile-bytecode) | sha256sum | cut -c1-16)"
  if [ ! -f "$AIRFLOW_STAMP" ]; then
    if [ -f "$AIRFLOW_VENV/pyvenv.cfg" ]; then rm -rf "$AIRFLOW_VENV"; fi  # a stale venv: start clean
    "$PY" -m venv "$AIRFLOW_VENV"
    "$AIRFLOW_VENV/bin/python" -m pip install --quiet uv==0.13.9
    "$AIRFLOW_VENV/bin/uv" pip install --quiet --compile-bytecode --python "$AIRFLOW_VENV/bin/python" \
      -r "$ROOT/scripts/airflow-requirements.txt" -c "$ROOT/scripts/airflow-constraints.txt"
    touch "$AIRFLOW_STAMP"
  fi
  export AUDIENCE_SYNC_AIRFLOW_VENV="$AIRFLOW_VENV"
fi
