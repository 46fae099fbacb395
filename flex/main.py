"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in the Dockerfile).

The template launcher runs ``python flex/main.py --config=... --output=... --run_date=...`` plus the
Dataflow options of the launch (``--runner``, ``--project``, ``--region``, ``--temp_location``...).
This file only picks the job -- ``AUDIENCE_SYNC_JOB`` (default ``import``; set it per template with
``gcloud dataflow flex-template build ... --env AUDIENCE_SYNC_JOB=NAME``) -- and hands every flag to
the same command line as ``audience-sync JOB``: the pipeline that runs is the installed package's.
A value naming no job (a typo; ``report``, which launches none) fails in one line naming the variable.
"""
from __future__ import annotations

import os
import sys

from pipelines.cli import VERBS, main

JOBS = tuple(verb for verb in VERBS if verb != "report")  # the verbs that launch a Beam job

if __name__ == "__main__":
    job = os.environ.get("AUDIENCE_SYNC_JOB", "import")
    if job not in JOBS:
        print(f"flex/main.py: AUDIENCE_SYNC_JOB={job!r} is not one of {', '.join(JOBS)} (set it at the template's "
              "build: gcloud dataflow flex-template build ... --env AUDIENCE_SYNC_JOB=NAME)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main([job, *sys.argv[1:]]))
