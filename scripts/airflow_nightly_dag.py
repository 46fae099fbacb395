r"""Airflow DAG: the nightly import, scheduled with the Beam provider's BeamRunPythonPipelineOperator.

Copy this file into the DAGs folder of an Airflow with `apache-airflow-providers-apache-beam` and
this project installed in the worker environment (`pip install audience-sync` / the wheel), and set
the Airflow Variables `audience_sync_config` and `audience_sync_root` (gs:// paths). The operator runs
`python pipelines/nightly.py --config=... --root=... --date={{ ds }} ...` and appends its own flags
(`--labels=airflow-version=...`): the job passes flags it does not know to Beam's PipelineOptions.

Without Airflow (e.g. in the tests) the module still imports: only NIGHTLY_OPTIONS is defined.

A plain cron line does the same on one machine (runs yesterday's night at 03:00 UTC):
    0 3 * * *  cd /srv/audience-sync && .venv/bin/audience-sync nightly --config job.yaml --root /data/audiences --date $(date -u -d yesterday +\%F)
"""
from __future__ import annotations

from datetime import datetime, timedelta

NIGHTLY_OPTIONS = {
    "config": "{{ var.value.audience_sync_config }}",
    "root": "{{ var.value.audience_sync_root }}",
    "date": "{{ ds }}",
    # Beam flags, for Dataflow (drop these three for the local runner):
    "runner": "DataflowRunner",
    "project": "{{ var.value.gcp_project }}",
    "region": "europe-west1",
}

try:  # pragma: no cover - only where Airflow is installed
    from airflow import DAG
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
except ImportError:  # the tests parse NIGHTLY_OPTIONS without Airflow
    DAG = None

if DAG is not None:  # pragma: no cover
    with DAG(
        dag_id="audience_sync_nightly",
        schedule="0 3 * * *",
        start_date=datetime(2026, 11, 1),
        catchup=True,  # missed nights run in order, each after the previous one
        max_active_runs=1,  # incremental nights depend on the previous published night
        default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    ) as dag:
        BeamRunPythonPipelineOperator(
            task_id="import_night",
            py_file="pipelines/nightly.py",
            pipeline_options=NIGHTLY_OPTIONS,
            py_interpreter="python3",
        )
