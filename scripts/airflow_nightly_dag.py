r"""Airflow DAG: the nightly import (``audience-sync nightly``), one run per night, on the Beam provider.

Needs **Airflow 3** with ``apache-airflow-providers-apache-beam`` **and**
``apache-airflow-providers-google``: the Beam operators refuse to be built without the Google provider,
whatever the runner (``BeamDataflowMixin.__init__`` raises ``AirflowOptionalProviderFeatureException``),
so without it this file does not import. Tested with the versions in ``scripts/airflow-requirements.txt``
(``tests/test_airflow_dag.py``). Copy this file into the DAGs folder.

The job runs in **its own virtualenv** (Beam 2.77 and this project's pins), not in Airflow's: the Variable
``audience_sync_python`` names that venv's interpreter, and each night the worker runs

    <audience_sync_python> -m pipelines.nightly --runner=<runner> --config=<config> --root=<root> \
        --date=<night> --labels=airflow-version=v3-3-2 [more Beam flags]

from any working directory (``-m`` finds the installed package). Airflow Variables (also settable as
``AIRFLOW_VAR_<NAME>`` environment variables):

- ``audience_sync_config`` (required): the job YAML; ``audience_sync_root`` (required): the partitions root
  (a required Variable unset or blank fails the task in one line, unretried). Absolute paths or ``gs://``
  URLs (a relative one is read from the task's working directory).
- ``audience_sync_python`` (required): e.g. ``/srv/audience-sync/.venv/bin/python``; checked to start and
  hold ``pipelines.nightly`` before each run (a refusal, not retried).
- ``audience_sync_runner``: ``FnApiRunner`` (default: the pinned local runner, in_memory, one worker,
  in the worker's process tree) or ``DataflowRunner``. Never Beam's ``DirectRunner``: in Beam 2.77 it
  first downloads the Prism runner.
- Dataflow only: ``audience_sync_gcp_project`` (default: the ``google_cloud_default`` connection's),
  ``audience_sync_region`` (default ``europe-west1``); the operator names the job
  ``audience-sync-nightly-<suffix>`` and passes ``--project``, ``--region``, ``--job_name``.
- ``audience_sync_beam_options``: a JSON object of more Beam flags, e.g. for Dataflow
  ``{"temp_location": "gs://B/dataflow/tmp", "staging_location": "gs://B/dataflow/staging",
  "sdk_container_image": "...", "service_account_email": "...", "max_num_workers": 8, "labels": {...}}``.
  On Dataflow it must name ``sdk_container_image`` (the project's image) or ``setup_file``: Beam's own
  image has no audience-sync. It may not set what the DAG owns (config, root, date, runner, project,
  region, job name, force), nor
  ``dry_run`` / ``template_location`` (the night would only be staged, its task green, nothing imported).

**Which night.** A run's logical date is the night it imports (``--date={{ ds }}``). The timetable is
an explicit ``CronDataIntervalTimetable`` at 03:00 UTC, so Airflow's ``create_cron_data_intervals``
setting cannot shift it: the run for night N covers [N 03:00, N+1 03:00) and starts at 03:00 on N+1
(the 03:00 run on day D imports D-1). To rerun or test a night, use its date: ``airflow tasks test
audience_sync_nightly import_night 2026-11-22``, or trigger with logical date 2026-11-22 (00:00 UTC). A
logical date at another time than 00:00 or 03:00 UTC is refused: given under a ``default_timezone`` other
than UTC, 2026-11-22 is 2026-11-21T23:00 UTC, whose ``ds`` is the night before. So is a run without a
logical date, and one with a conf (nothing reads it: no ``force``, no other date). A run dated
today or later fails before the job starts: that night's dumps are not complete yet, and publishing
part of it would make its scheduled run skip it ("already published"). ``catchup=True`` runs missed
nights in order from ``start_date`` (the first night) and ``max_active_runs=1`` keeps them serial: a
night builds on the previous published one.

A failed job fails the task (the launcher exits 1 or 2 with one line naming the cause). A refusal (exit 2,
or the DAG's own checks below) fails it at once: the same night gives the same refusal until the operator
changes something; a failed run (exit 1) is retried twice, 10 minutes apart. On Dataflow the
launcher waits for its job, so the task does too: the CLI logs at WARNING, so the provider does not see
Beam's "Created job with id" line, waits for the launcher's exit code, then finds the finished job by
its name and checks its final state. The provider warns "dataflow_config is defined but runner is
different" on every local run: harmless.

Without Airflow (e.g. in the project's own tests) the module still imports: only the option templates
and checks below are defined. A plain cron line does the same on one machine (yesterday's night at 03:00 UTC):
    0 3 * * *  cd /srv/audience-sync && .venv/bin/audience-sync nightly --config job.yaml --root /data/audiences --date $(date -u -d yesterday +\%F)
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from datetime import date, datetime, time, timedelta, timezone

DAG_ID = "audience_sync_nightly"
TASK_ID = "import_night"
SCHEDULE = "0 3 * * *"  # UTC

NIGHT = "{{ ds | default('') }}"  # the logical date (scheduled runs: their data interval's start); none: see night_of
NIGHTLY_OPTIONS = {
    "config": "{{ var.value.get('audience_sync_config', '') }}",
    "root": "{{ var.value.get('audience_sync_root', '') }}",
    "date": NIGHT,
}
RUNNER = "{{ var.value.get('audience_sync_runner', 'FnApiRunner') }}"
PYTHON = "{{ var.value.get('audience_sync_python', '') }}"
BEAM_OPTIONS = "{{ var.value.get('audience_sync_beam_options', '{}') }}"
DATAFLOW_CONFIG = {
    "job_name": "audience-sync-nightly",
    "project_id": "{{ var.value.get('audience_sync_gcp_project', '') }}",
    "location": "{{ var.value.get('audience_sync_region', 'europe-west1') }}",
}
# Flags the DAG (or the operator, on Dataflow) sets itself; a Variable overriding them would run
# another night, another config or another runner than the one the run shows.
OWNED_OPTIONS = frozenset({"config", "root", "date", "backfill", "force", "runner", "project", "region",
                           "job_name"})
# Flags that make the launch only stage the job (Dataflow): the launcher exits 0, the provider finds no
# job to wait for and the task succeeds, while no night was imported.
STAGING_OPTIONS = frozenset({"dry_run", "template_location"})


def extra_beam_options(text: str) -> dict:
    """The ``audience_sync_beam_options`` Variable, checked: a JSON object not touching the DAG's flags."""
    try:
        extra = json.loads(text or "{}")
    except ValueError as exc:
        raise ValueError(f"Variable audience_sync_beam_options: not JSON ({exc.msg})") from None
    if not isinstance(extra, dict):
        raise ValueError("Variable audience_sync_beam_options: expected a JSON object of Beam flags")
    names = {key.replace("-", "_") for key in extra}
    owned = sorted(OWNED_OPTIONS & names)
    if owned:
        raise ValueError(f"Variable audience_sync_beam_options: may not set {', '.join(owned)} (the DAG sets them)")
    staging = sorted(STAGING_OPTIONS & names)
    if staging:
        raise ValueError(f"Variable audience_sync_beam_options: may not set {', '.join(staging)} (the night would "
                         "only be staged, and its task succeed with nothing imported)")
    if not isinstance(extra.get("labels", {}), dict):  # the operator adds its airflow-version label to them
        raise ValueError('Variable audience_sync_beam_options: "labels" must be a JSON object')
    return extra


RUNNERS = ("FnApiRunner", "DataflowRunner")  # the local runner the project pins, and Dataflow
# What gives Dataflow's workers this project's code: its image (Dockerfile), or a package Beam stages.
CODE_OPTIONS = frozenset({"sdk_container_image", "worker_harness_container_image", "setup_file", "extra_package",
                          "extra_packages"})


def check_workers_get_the_code(runner: str, extra: dict) -> None:
    """On Dataflow the workers import ``pipelines``/``transforms`` from their image or a staged package:
    with neither (Beam's stock image) they cannot unpickle the job's DoFns ('No module named
    transforms'), once the workers are up, a failed run the task retries twice."""
    if runner == "DataflowRunner" and not CODE_OPTIONS & {key.replace("-", "_") for key in extra}:
        raise ValueError("Variable audience_sync_beam_options: a DataflowRunner night needs sdk_container_image (the "
                         "project's image, see the Dockerfile) or setup_file: Beam's own image has no audience-sync")


def check_runner(runner: str) -> None:
    """The runner the Variable names must be one the project runs on: DirectRunner first tries to
    download Prism (README, "Local runner"), and a misspelled name ran whatever Beam made of it."""
    if runner not in RUNNERS:
        raise ValueError(f"Variable audience_sync_runner: {runner!r} is not one of {', '.join(RUNNERS)}")


REQUIRED = {"audience_sync_config": "the job YAML", "audience_sync_root": "the partitions root",
            "audience_sync_python": "the job venv's interpreter"}


def check_set(variable: str, value: str) -> None:
    """A required Variable (read with a default of '', so that an unset one reaches this line: read
    without one, it failed the render with a traceback, VARIABLE_NOT_FOUND, and the task was retried)."""
    if not value.strip():
        raise ValueError(f"Variable {variable} is not set (or blank): set it to {REQUIRED[variable]}")


def check_path_variable(variable: str, value: str) -> None:
    """``audience_sync_config`` / ``audience_sync_root``: an absolute path or a URL (``gs://``). A relative
    one is read from the task's working directory, which is nobody's choice (each worker's, or the shell's
    of ``airflow tasks test``): the night was published there, exit 0. A space or line break at either end
    (a value pasted into the UI) names another folder, 'root ' beside 'root'. (Blank: :func:`check_set`.)"""
    if value != value.strip():
        raise ValueError(f"Variable {variable}: a space or line break at its start or end; set it without")
    if value and "://" not in value and not os.path.isabs(value):
        raise ValueError(f"Variable {variable}: not an absolute path nor a URL (gs://...): a relative path is read "
                         "from the task's working directory, which is not the job's")


# Run by the job's interpreter: whether it has the project (pipelines.nightly), without importing Beam.
_HAS_JOB = ("import importlib.util, sys\ntry:\n    found = importlib.util.find_spec('pipelines.nightly')\n"
            "except ImportError:\n    found = None\nsys.exit(0 if found else 3)")


def check_job_python(python: str) -> None:
    """``audience_sync_python`` must start and hold the project: a path to no file failed the task with the
    hook's FileNotFoundError traceback, and an interpreter without the project (Airflow's own) with 'No
    module named pipelines' (exit 1); both were retried twice, 20 minutes for a Variable to set."""
    try:
        probe = subprocess.run([python, "-c", _HAS_JOB], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"Variable audience_sync_python: cannot start {python!r} "
                         f"({getattr(exc, 'strerror', None) or type(exc).__name__}): name the job venv's interpreter, "
                         "e.g. /srv/audience-sync/.venv/bin/python") from None
    if probe.returncode == 3:
        raise ValueError(f"Variable audience_sync_python: {python!r} has no audience-sync (no module "
                         "pipelines.nightly): name the interpreter of the venv it is installed in")
    if probe.returncode != 0:
        raise ValueError(f"Variable audience_sync_python: {python!r} cannot start (exit {probe.returncode})")


# The job's exit code for a refusal (a configuration error: a gap, an iter night with nothing to build
# on, a night not over, ...): the same inputs and flags give the same refusal, so a retry only delays
# the alert (and a night refused as not over could pass on a retry after midnight, dumps still arriving).
REFUSED = 2


def refused(failure: str) -> bool:
    """Whether the Beam hook's failure (``Apache Beam process failed with return code N``) is the job's
    refusal, which fails the task at once; any other failure (exit 1: a storage outage, the root held
    by another run; 143: stopped) is retried."""
    code = re.search(r"return code (-?\d+)", failure)
    return code is not None and int(code.group(1)) == REFUSED


# The times (UTC) a run's logical date may carry: 03:00, the schedule's, and 00:00, a night's date given
# alone in UTC (``airflow tasks test ... 2026-11-22``, a run triggered with logical date 2026-11-22).
NIGHT_STARTS = (time(0), time(3))


def night_of(logical_date: datetime | None) -> str:
    """The night a run imports: its logical date's day in UTC (``{{ ds }}``). Refused: a run without a
    logical date (Airflow 3 triggers one so when none is given: ``{{ ds }}`` failed to render, a traceback,
    retried twice), and a logical date at another time of day, which names another night in UTC than the
    date it was given as: under ``default_timezone = Europe/Paris``, ``airflow tasks test ... 2026-11-22``
    is 2026-11-21T23:00 UTC, and night 2026-11-21 was imported (or said already published), exit 0."""
    if logical_date is None:
        raise ValueError("the run has no logical date (triggered without one): trigger it with the night's "
                         "date as its logical date, e.g. 2026-11-22T00:00:00+00:00")
    utc = (logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    if utc.timetz().replace(tzinfo=None) not in NIGHT_STARTS:
        raise ValueError(f"logical date {utc.isoformat()} is neither 00:00 nor 03:00 UTC, so it names night "
                         f"{utc.date()} only in UTC (a date given in another timezone: Airflow's default_timezone?): "
                         "give the night's date at 00:00 UTC, e.g. 2026-11-22T00:00:00+00:00")
    return utc.date().isoformat()


def check_no_conf(conf: dict | None) -> None:
    """A run's conf is read by nothing: a run triggered with ``{"date": ..., "force": true}`` imported its
    logical date's night without --force (said "already published", exit 0)."""
    if conf:
        raise ValueError(f"the run's conf ({', '.join(sorted(map(str, conf)))}) is read by nothing: the run imports "
                         "its logical date's night with the Variables' settings; trigger it without a conf (for "
                         "--force or --allow-gap, run audience-sync nightly by hand)")


def check_night_is_over(night: str, now: datetime | None = None) -> None:
    """Refuse a night that has not ended (UTC): its dumps are not complete, and a partial publish
    would make the night's scheduled run skip it as "already published"."""
    today = (now or datetime.now(timezone.utc)).date()
    if date.fromisoformat(night) >= today:
        raise ValueError(f"night {night} is not over (today is {today} UTC): run a past night's date")


# Only where Airflow is installed (the project's tests import this module without it). There, a missing
# provider must be an import error that Airflow shows, never a file that silently defines no DAG.
if importlib.util.find_spec("airflow") is not None:  # pragma: no cover
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
    from airflow.sdk import DAG, CronDataIntervalTimetable

    class NightlyImportOperator(BeamRunPythonPipelineOperator):
        """The Beam operator, with the interpreter templated (a Variable names the job's venv), more
        Beam flags from a JSON Variable merged after rendering, and no night imported before its end."""

        template_fields = (*BeamRunPythonPipelineOperator.template_fields, "py_interpreter", "beam_options")

        def __init__(self, *, beam_options: str = "{}", **kwargs):
            super().__init__(**kwargs)
            self.beam_options = beam_options

        def execute(self, context):
            try:  # the DAG's own refusals: no retry either
                night = night_of(context.get("logical_date"))
                check_night_is_over(night)
                check_no_conf(getattr(context.get("dag_run"), "conf", None))
                check_runner(self.runner)
                for variable, key in (("audience_sync_config", "config"), ("audience_sync_root", "root")):
                    check_set(variable, self.pipeline_options[key])
                    check_path_variable(variable, self.pipeline_options[key])
                check_set("audience_sync_python", self.py_interpreter)
                check_job_python(self.py_interpreter)
                extra = extra_beam_options(self.beam_options)
                check_workers_get_the_code(self.runner, extra)
                self.pipeline_options = {**self.pipeline_options, "date": night, **extra}
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None
            try:
                return super().execute(context)
            except AirflowException as exc:
                if refused(str(exc)):
                    raise AirflowFailException(f"{exc}: the job refused the night (its log's last lines say why "
                                               "and what to change); not retried") from exc
                raise

    with DAG(
        dag_id=DAG_ID,
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),  # the first night imported
        catchup=True,  # missed nights run in order, each after the previous one
        max_active_runs=1,  # incremental nights depend on the previous published night
        # A failed night blocks the next ones until it succeeds: the next night would build on the night
        # before the failed one and miss its changes (the job refuses it when the failed night had dumps,
        # unless --allow-gap; and the late night unless the chain is rebuilt with --backfill ... --force).
        default_args={"retries": 2, "retry_delay": timedelta(minutes=10), "depends_on_past": True},
    ) as dag:
        NightlyImportOperator(
            task_id=TASK_ID,
            py_interpreter=PYTHON,
            py_options=["-m"],
            py_file="pipelines.nightly",
            runner=RUNNER,
            pipeline_options=NIGHTLY_OPTIONS,
            beam_options=BEAM_OPTIONS,
            dataflow_config=DATAFLOW_CONFIG,
            # The launcher waits for its job; deferring would run a local job inside the triggerer.
            deferrable=False,
        )
