"""Run by the *Airflow* venv's interpreter (tests/test_airflow_dag.py): load the DAGs folder with
Airflow's DagBag and print, as JSON, the import errors, the nightly task's settings, which night
the scheduler's run at 03:00 UTC on 2026-11-23 would carry as its logical date, and what the task's
``execute`` says to runs its own checks refuse (no job starts: the Beam operator's is replaced)."""
from __future__ import annotations

import copy
import json
import os
import sys
from datetime import datetime, timezone
from types import SimpleNamespace

from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization


def main(dags_folder: str) -> None:
    bag = DagBag(dag_folder=dags_folder)
    found = {"import_errors": bag.import_errors, "dag_ids": sorted(bag.dags)}
    dag = bag.dags.get("audience_sync_nightly")
    if dag is not None:
        task = dag.get_task("import_night")
        found["task"] = {
            "operator": [cls.__name__ for cls in type(task).__mro__],
            "py_file": task.py_file, "py_options": task.py_options, "deferrable": task.deferrable,
            "template_fields": list(task.template_fields), "depends_on_past": task.depends_on_past,
        }
        found["dag"] = {"catchup": dag.catchup, "max_active_runs": dag.max_active_runs}
        # What the scheduler does with the DAG: the serialized form it schedules from.
        scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        found["timetable"] = type(scheduled.timetable).__name__
        runs = scheduled.iter_dagrun_infos_between(datetime(2026, 11, 22, tzinfo=timezone.utc),
                                                   datetime(2026, 11, 23, 3, tzinfo=timezone.utc))
        found["runs"] = {r.run_after.isoformat(): r.logical_date.isoformat() for r in runs}
        first = scheduled.next_dagrun_info(last_automated_run_info=None)
        found["first_run"] = [first.run_after.isoformat(), first.logical_date.isoformat()]
        found["refusals"] = refusals(task)
    print(json.dumps(found, default=str))


def refusals(task) -> dict[str, str]:
    """``task.execute`` with its fields as rendered, for runs the DAG refuses: the exception's type and text."""
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

    def start_the_job(self, context):
        raise RuntimeError("the job would start")

    BeamRunPythonPipelineOperator.execute = start_the_job
    today = datetime.now(timezone.utc).replace(hour=3, minute=0, second=0, microsecond=0)
    night = datetime(2026, 11, 22, 3, tzinfo=timezone.utc)
    job_python = os.environ["AIRFLOW_VAR_AUDIENCE_SYNC_PYTHON"]
    # name: what differs from a valid night's run (its logical date, conf, interpreter, root, runner, Beam flags)
    cases = {
        "today": {"logical": today},
        "no logical date": {"logical": None},
        "paris midnight": {"logical": datetime(2026, 11, 21, 23, tzinfo=timezone.utc)},
        "conf": {"conf": {"force": True}},
        "relative root": {"root": "audiences"},
        "root not set": {"root": ""},
        "no interpreter": {"python": "/nonexistent/bin/python"},
        "dataflow without the code": {"runner": "DataflowRunner", "beam_options": '{"temp_location": "gs://b/tmp"}',
                                      "root": "gs://b/audiences"},
        "accepted": {},
    }
    out = {}
    for name, differs in cases.items():
        case = {"logical": night, "conf": None, "python": job_python, "root": "/data/audiences",
                "runner": "FnApiRunner", "beam_options": "{}", **differs}
        logical = case["logical"]
        run = copy.copy(task)
        run.py_interpreter, run.runner, run.beam_options = case["python"], case["runner"], case["beam_options"]
        run.pipeline_options = {"config": "/data/job.yaml", "root": case["root"],
                                "date": logical.strftime("%Y-%m-%d") if logical else ""}
        context = {"dag_run": SimpleNamespace(conf=case["conf"])}
        if logical is not None:
            context["logical_date"] = logical
        try:
            run.execute(context)
            out[name] = "executed"
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


if __name__ == "__main__":
    main(sys.argv[1])
