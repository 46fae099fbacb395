"""The nightly DAG (scripts/airflow_nightly_dag.py) in a real Airflow, loaded as a user would: Airflow 3
with the Beam and Google providers in a venv of its own (scripts/airflow-requirements.txt; scripts/test
makes it), the job in this project's interpreter. DagBag loads it without import errors and schedules
the night before; ``airflow tasks render`` shows the Dataflow settings; ``airflow tasks test`` runs the
night on the demo data on the local runner, from outside the repository, and publishes the same bytes
as a direct ``audience-sync nightly`` run. Without that venv these tests fail, unless
AUDIENCE_SYNC_SKIP_AIRFLOW=1 says they are skipped on purpose. The DAG's own checks run without Airflow.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import DEMO, ROOT
from pipelines import nightly

import airflow_nightly_dag as dag_module

AIRFLOW_VENV = Path(os.environ.get("AUDIENCE_SYNC_AIRFLOW_VENV") or f"{sys.prefix}-airflow")
NIGHT = "2026-11-22"


class Airflow:
    """``airflow`` (and the venv's python) with a private AIRFLOW_HOME and the DAG in its dags folder;
    the DAG's Variables come from AIRFLOW_VAR_* environment variables."""

    def __init__(self, home: Path):
        self.home = home
        dags = home / "dags"
        dags.mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "airflow_nightly_dag.py", dags)  # "copy it into the DAGs folder"
        self.dags = dags
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        # The job must run this tree's code (CI installs it editable; helpers run with PYTHONPATH).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                   AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW_VAR_AUDIENCE_SYNC_PYTHON=sys.executable,
                   AIRFLOW_VAR_AUDIENCE_SYNC_CONFIG=str(DEMO / "job.yaml"))
        self.env = env

    def run(self, *args: str, variables: dict[str, str] | None = None, timeout: int = 600) -> str:
        env = {**self.env, **{f"AIRFLOW_VAR_{k.upper()}": v for k, v in (variables or {}).items()}}
        proc = subprocess.run(list(args), cwd=self.home, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args[:3])} failed:\n{proc.stdout[-4000:]}"
        return proc.stdout

    def airflow(self, *args: str, **kwargs) -> str:
        return self.run(str(AIRFLOW_VENV / "bin" / "airflow"), *args, **kwargs)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Airflow:
    if os.environ.get("AUDIENCE_SYNC_SKIP_AIRFLOW") == "1":
        pytest.skip("AUDIENCE_SYNC_SKIP_AIRFLOW=1: the Airflow DAG tests are skipped on purpose")
    if not (AIRFLOW_VENV / "bin" / "airflow").exists():
        pytest.fail(f"no Airflow venv at {AIRFLOW_VENV}: scripts/test makes it (scripts/_airflow_env.sh), or "
                    "point AUDIENCE_SYNC_AIRFLOW_VENV at one; AUDIENCE_SYNC_SKIP_AIRFLOW=1 skips these tests")
    found = Airflow(tmp_path_factory.mktemp("airflow"))
    found.airflow("db", "migrate")  # tasks render/test need Airflow's (sqlite) database
    return found


def test_dagbag_loads_the_dag_and_the_scheduler_imports_the_night_before(airflow):
    out = airflow.run(str(AIRFLOW_VENV / "bin" / "python"), str(ROOT / "tests" / "airflow_probe.py"), str(airflow.dags))
    found = json.loads(out.strip().splitlines()[-1])
    assert found["import_errors"] == {}
    assert found["dag_ids"] == ["audience_sync_nightly"]
    task = found["task"]
    assert "BeamRunPythonPipelineOperator" in task["operator"]
    assert (task["py_options"], task["py_file"], task["deferrable"]) == (["-m"], "pipelines.nightly", False)
    # A failed night blocks the next ones: published on top of the gap, the next night missed its changes.
    assert task["depends_on_past"] is True
    assert {"py_interpreter", "runner", "pipeline_options"} <= set(task["template_fields"])
    assert found["dag"] == {"catchup": True, "max_active_runs": 1}
    assert found["timetable"] == "CronDataIntervalTimetable"
    # The run that starts at 03:00 on the 23rd carries the 22nd as its logical date, i.e. --date=2026-11-22.
    assert found["runs"]["2026-11-23T03:00:00+00:00"] == "2026-11-22T03:00:00+00:00"
    assert found["first_run"] == ["2026-11-02T03:00:00+00:00", "2026-11-01T03:00:00+00:00"]

    # The task's own checks, as its execute() meets them: AirflowFailException (failed, never retried: see
    # test_a_refused_night_fails_at_once_and_a_failed_run_is_retried), before any job starts.
    refused = found["refusals"]
    today = datetime.now(timezone.utc).date().isoformat()
    assert refused.pop("accepted") == "RuntimeError: the job would start"
    assert refused == {
        "today": f"AirflowFailException: night {today} is not over (today is {today} UTC): run a past night's date",
        "no logical date": "AirflowFailException: the run has no logical date (triggered without one): trigger it "
                           "with the night's date as its logical date, e.g. 2026-11-22T00:00:00+00:00",
        "paris midnight": refused["paris midnight"], "conf": refused["conf"], "relative root": refused["relative root"],
        "no interpreter": refused["no interpreter"],
        "root not set": "AirflowFailException: Variable audience_sync_root is not set (or blank): set it to the "
                        "partitions root",
        "dataflow without the code": refused["dataflow without the code"]}
    assert refused["dataflow without the code"].startswith("AirflowFailException: Variable audience_sync_beam_options: "
                                                           "a DataflowRunner night needs sdk_container_image")
    assert refused["paris midnight"].startswith("AirflowFailException: logical date 2026-11-21T23:00:00+00:00 is "
                                                "neither 00:00 nor 03:00 UTC")
    assert refused["conf"].startswith("AirflowFailException: the run's conf (force) is read by nothing")
    assert refused["relative root"].startswith("AirflowFailException: Variable audience_sync_root: not an absolute")
    assert refused["no interpreter"].startswith("AirflowFailException: Variable audience_sync_python: cannot start "
                                                "'/nonexistent/bin/python'")


def rendered_fields(output: str) -> dict[str, str]:
    """``airflow tasks render`` prints each template field under a ``# property: NAME`` banner."""
    fields, name = {}, None
    for line in output.splitlines():
        if line.startswith("# property: "):
            name = line.removeprefix("# property: ").strip()
            fields[name] = []
        elif name and not line.startswith("# ---"):
            fields[name].append(line)
    return {k: "\n".join(v).strip() for k, v in fields.items()}


def test_rendered_for_dataflow_from_the_variables(airflow):
    out = airflow.airflow("tasks", "render", "audience_sync_nightly", "import_night", f"{NIGHT}T03:00:00+00:00",
                          variables={"audience_sync_runner": "DataflowRunner", "audience_sync_root": "gs://b/audiences",
                                     "audience_sync_config": "gs://b/job.yaml", "audience_sync_gcp_project": "my-project",
                                     "audience_sync_region": "europe-west4",
                                     "audience_sync_beam_options": '{"temp_location": "gs://b/tmp", "max_num_workers": 8}'})
    fields = rendered_fields(out)
    assert fields["runner"] == "DataflowRunner"
    assert (fields["py_interpreter"], fields["py_file"]) == (sys.executable, "pipelines.nightly")
    assert ast.literal_eval(fields["pipeline_options"]) == {"config": "gs://b/job.yaml", "root": "gs://b/audiences",
                                                             "date": NIGHT}
    assert ast.literal_eval(fields["dataflow_config"]) == {"job_name": "audience-sync-nightly",
                                                            "project_id": "my-project", "location": "europe-west4"}
    assert dag_module.extra_beam_options(fields["beam_options"]) == {"temp_location": "gs://b/tmp", "max_num_workers": 8}


def partition_files(root: Path) -> dict[str, bytes]:
    part = root / f"dt={NIGHT}"
    return {str(p.relative_to(part)): p.read_bytes() for p in sorted(part.rglob("*")) if p.is_file()}


def test_tasks_test_runs_the_night_on_the_local_runner_like_a_direct_run(airflow, tmp_path):
    direct_root = tmp_path / "direct"
    direct = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "nightly", "--config", str(DEMO / "job.yaml"),
                               "--root", str(direct_root), "--date", NIGHT],
                              cwd=ROOT, env=airflow.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    via_root = tmp_path / "via-airflow"
    out = airflow.airflow("tasks", "test", "audience_sync_nightly", "import_night", NIGHT,
                          variables={"audience_sync_root": str(via_root)})
    direct_out = direct.communicate(timeout=600)[0]
    assert direct.returncode == 0, direct_out[-4000:]

    # The command the Beam hook ran (it logs it before starting it).
    line = re.search(r"Running command: (.*?)(?:\s+\[airflow\.task.*)?$", out, re.M)
    assert line, out[-4000:]
    cmd = shlex.split(line.group(1))
    assert cmd[:4] == [sys.executable, "-m", "pipelines.nightly", "--runner=FnApiRunner"]
    assert {f"--config={DEMO / 'job.yaml'}", f"--root={via_root}", f"--date={NIGHT}"} <= set(cmd)
    # `airflow tasks test` exits 0 even when the task fails: the task's own outcome is in its log.
    assert "Process exited with return code: 0" in out and "Task failed" not in out, out[-4000:]

    via, expected = partition_files(via_root), partition_files(direct_root)
    assert {"_SUCCESS", "report.json"} <= set(expected) and any(p.startswith("reconciled/") for p in expected)
    assert sorted(via) == sorted(expected)
    # _SUCCESS too: it carries no run-specific field (its code_version proves both ran this tree's code).
    assert [p for p in expected if via[p] != expected[p]] == []


def test_a_refused_night_fails_at_once_and_a_failed_run_is_retried(airflow, tmp_path):
    """A refusal (exit 2: an iter night with nothing to build on, a gap, a night not over) was retried
    twice, 10 minutes apart: the same refusal, the alert 20 minutes late, and a night refused as not
    over could pass on a retry after midnight, before its dumps were all delivered. A failed run
    (exit 1: here the root held by a live run) is still retried."""
    import socket

    from test_nightly_guards import V, dump, write_job

    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-20", [f"{V[1]} 10"], mode="iter")  # no night to build on: exit 2
    variables = {"audience_sync_config": str(config), "audience_sync_root": str(root)}
    out = airflow.airflow("tasks", "test", "audience_sync_nightly", "import_night", "2026-11-20", variables=variables)
    assert "Process exited with return code: 2" in out, out[-4000:]
    assert "new_state=failed" in out and "up_for_retry" not in out, out[-4000:]
    # The DAG's own refusals (a night not over, ...) raise the same AirflowFailException before the job
    # starts: test_dagbag_loads_the_dag_and_the_scheduler_imports_the_night_before calls execute() for them.

    dump(tmp_path, "a", "2026-11-19", [f"{V[1]} 10"])
    root.mkdir(exist_ok=True)
    (root / "_lock.json").write_text(json.dumps({"run_id": "live", "job": "nightly", "host": socket.gethostname(),
                                                 "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat()}))
    out = airflow.airflow("tasks", "test", "audience_sync_nightly", "import_night", "2026-11-19", variables=variables)
    assert "Process exited with return code: 1" in out and "is in use by run live" in out, out[-4000:]
    assert "new_state=up_for_retry" in out, out[-4000:]


# --- The DAG's own checks, without Airflow -------------------------------------------------------

def test_beam_options_variable_may_not_override_what_the_dag_sets():
    assert dag_module.extra_beam_options("") == {}
    assert dag_module.extra_beam_options('{"max_num_workers": 8, "labels": {"team": "crm"}}') == {
        "max_num_workers": 8, "labels": {"team": "crm"}}
    for text, says in [('{"date": "2026-01-01"}', "may not set date"), ('{"runner": "DirectRunner"}', "may not set runner"),
                       ('{"job-name": "x"}', "may not set job_name"), ('["--x"]', "expected a JSON object"),
                       ("{temp_location: 1}", "not JSON"), ('{"labels": ["a=b"]}', '"labels" must be a JSON object')]:
        with pytest.raises(ValueError, match=re.escape(says)):
            dag_module.extra_beam_options(text)


def test_the_runner_is_one_the_dag_runs_on():
    """The audience_sync_runner Variable: DirectRunner tries to download Prism first (and, where it
    can, runs a runner nobody tested); a typo ran whatever Beam made of it."""
    for runner in ("FnApiRunner", "DataflowRunner"):
        dag_module.check_runner(runner)
    for runner in ("DirectRunner", "FnApiRuner", ""):
        with pytest.raises(ValueError, match="Variable audience_sync_runner: "):
            dag_module.check_runner(runner)


def test_a_night_is_imported_only_once_it_is_over():
    now = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    dag_module.check_night_is_over("2026-11-22", now)
    for night in ("2026-11-23", "2026-11-24"):
        with pytest.raises(ValueError, match=f"night {night} is not over"):
            dag_module.check_night_is_over(night, now)


def test_operator_style_arguments_parse_in_the_job():
    # The Beam hook's format (beam_options_to_args): --runner first, --key=value, labels as key=value.
    options = {**dag_module.NIGHTLY_OPTIONS, "config": "gs://b/job.yaml", "root": "gs://b/audiences", "date": NIGHT,
               "project": "my-project", "region": "europe-west1", "job_name": "audience-sync-nightly-1a2b3c4d",
               "labels": ["airflow-version=v3-3-2"], "max_num_workers": 8}
    argv = ["--runner=DataflowRunner"]
    for key, value in options.items():
        argv += [f"--{key}={v}" for v in value] if isinstance(value, list) else [f"--{key}={value}"]
    known, beam_args = nightly.parse_args(argv)
    assert (known.config, known.root, known.date.isoformat()) == ("gs://b/job.yaml", "gs://b/audiences", NIGHT)
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

    opts = PipelineOptions(beam_args)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    assert opts.view_as(GoogleCloudOptions).labels == ["airflow-version=v3-3-2"]
    assert opts.view_as(GoogleCloudOptions).project == "my-project"


def test_beam_options_variable_may_not_make_the_night_a_staged_job():
    """With dry_run or template_location the job is only staged: the launcher exits 0, the provider finds
    no Dataflow job to wait for (its wait returns at once) and the night's task succeeds, imported by nobody."""
    for text in ('{"dry_run": true}', '{"template_location": "gs://b/t.json"}', '{"template-location": "x"}'):
        with pytest.raises(ValueError, match="Variable audience_sync_beam_options: may not set "):
            dag_module.extra_beam_options(text)


def test_the_night_is_the_logical_dates_day_in_utc_and_only_a_nights_start_names_it():
    """Under Airflow's default_timezone = Europe/Paris, ``airflow tasks test ... 2026-11-22`` (or a trigger
    with that logical date) is 2026-11-21T23:00 UTC: ``{{ ds }}`` was 2026-11-21 and that night was imported
    (or said already published), exit 0. A run triggered without a logical date (Airflow 3) failed to
    render ``{{ ds }}``, a traceback, retried twice."""
    from datetime import timedelta as td

    assert dag_module.night_of(datetime(2026, 11, 22, 3, tzinfo=timezone.utc)) == NIGHT  # the scheduled run
    assert dag_module.night_of(datetime(2026, 11, 22, tzinfo=timezone.utc)) == NIGHT  # a date given in UTC
    assert dag_module.night_of(datetime(2026, 11, 22, 4, tzinfo=timezone(td(hours=1)))) == NIGHT  # 03:00 UTC
    for logical in (datetime(2026, 11, 22, tzinfo=timezone(td(hours=1))),  # Paris midnight: 21T23:00 UTC
                    datetime(2026, 11, 22, tzinfo=timezone(td(hours=-5))),  # New York midnight: 22T05:00 UTC
                    datetime(2026, 11, 23, 10, 17, 5, tzinfo=timezone.utc)):  # "now", a trigger's default
        with pytest.raises(ValueError, match=r"^logical date .* is neither 00:00 nor 03:00 UTC"):
            dag_module.night_of(logical)
    with pytest.raises(ValueError, match="^the run has no logical date"):
        dag_module.night_of(None)


def test_a_run_conf_is_refused_not_ignored():
    """A run triggered with a conf ({"date": ..., "force": true}) imported its logical date's night, the
    conf read by nothing (no --force: 'already published', exit 0)."""
    dag_module.check_no_conf(None)
    dag_module.check_no_conf({})
    with pytest.raises(ValueError, match=re.escape("the run's conf (date, force) is read by nothing")):
        dag_module.check_no_conf({"force": True, "date": "2026-11-15"})


def test_the_job_interpreter_must_run_the_job(tmp_path):
    """``audience_sync_python`` naming no file failed the task with the hook's FileNotFoundError traceback,
    retried twice; naming an interpreter without the project (Airflow's own) failed each try with 'No module
    named pipelines' (exit 1), retried twice: 20 minutes for a Variable to set."""
    dag_module.check_job_python(sys.executable)  # this tree's code (PYTHONPATH), as the tests' job runs it
    bare = tmp_path / "python"  # an interpreter that sees no project: no PYTHONPATH, no site-packages
    bare.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S "$@"\n')
    bare.chmod(0o755)
    for python, says in [(str(tmp_path / "nowhere" / "python"), "cannot start"), (str(bare), "has no audience-sync"),
                         (str(tmp_path), "cannot start")]:
        with pytest.raises(ValueError, match=f"^Variable audience_sync_python: .*{says}"):
            dag_module.check_job_python(python)


def test_config_and_root_variables_are_absolute_paths_or_urls():
    """A relative ``audience_sync_root`` was read from the task's working directory (another on each worker,
    ``airflow tasks test``'s own): the night was published there, exit 0, where no reader looks. A space or
    line break at a Variable's end (pasted into the UI) named another folder: 'root ' beside 'root'."""
    for value in ("/data/audiences", "gs://b/audiences"):
        dag_module.check_path_variable("audience_sync_root", value)
    for value, says in [("audiences", "not an absolute path"), ("./job.yaml", "not an absolute path"),
                        ("/data/audiences ", "a space or line break"), ("gs://b/audiences\n", "a space or line break"),
                        (" /data/audiences", "a space or line break")]:
        with pytest.raises(ValueError, match=f"^Variable audience_sync_root: {says}"):
            dag_module.check_path_variable("audience_sync_root", value)


def test_a_required_variable_unset_or_blank_is_one_line():
    """``{{ var.value.audience_sync_root }}`` with the Variable unset failed to render: a traceback
    (AirflowRuntimeError: VARIABLE_NOT_FOUND), and the task retried twice, 20 minutes for a Variable to set.
    The templates read the required Variables with a default of '' and the task refuses a blank one."""
    for name in ("config", "root", "python"):
        template = dag_module.PYTHON if name == "python" else dag_module.NIGHTLY_OPTIONS[name]
        assert template == f"{{{{ var.value.get('audience_sync_{name}', '') }}}}"
        dag_module.check_set(f"audience_sync_{name}", "/x")
        for blank in ("", " ", "\n"):
            with pytest.raises(ValueError, match=f"^Variable audience_sync_{name} is not set"):
                dag_module.check_set(f"audience_sync_{name}", blank)


def test_a_dataflow_night_must_ship_the_code_to_its_workers():
    """audience_sync_runner=DataflowRunner with audience_sync_beam_options naming neither an SDK container
    image nor a package: the workers (Beam's stock image) cannot unpickle the job's DoFns (a Beam 2.77
    interpreter without the project: "No module named 'transforms'"), found once the workers are up, and
    the failed run is retried twice: three failed Dataflow jobs for one Variable."""
    for extra in ({"sdk_container_image": "europe-docker.pkg.dev/p/r/audience-sync:1"}, {"setup_file": "/srv/a/setup.py"},
                  {"extra_packages": ["/srv/a/dist/audience_sync-0.1.0.tar.gz"]}, {"sdk-container-image": "x"}):
        dag_module.check_workers_get_the_code("DataflowRunner", extra)
    dag_module.check_workers_get_the_code("FnApiRunner", {})  # the local runner runs the job venv's code
    with pytest.raises(ValueError, match="^Variable audience_sync_beam_options: a DataflowRunner night needs "
                                         "sdk_container_image"):
        dag_module.check_workers_get_the_code("DataflowRunner", {"temp_location": "gs://b/tmp"})
