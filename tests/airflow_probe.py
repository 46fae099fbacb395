"""Run by the *Airflow* venv's interpreter (tests/test_airflow_dag.py): load the DAGs folder with
Airflow's DagBag and print, as JSON, the import errors, the nightly task's settings and which night
the scheduler's run at 03:00 UTC on 2026-11-23 would carry as its logical date."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

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
    print(json.dumps(found, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
