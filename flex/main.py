"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in the Dockerfile).

The template launcher runs ``python flex/main.py --config=... --output=... --run_date=...`` plus the
Dataflow options of the launch (``--runner``, ``--project``, ``--region``, ``--temp_location``...).
This file only picks the job -- ``AUDIENCE_SYNC_JOB`` (default ``import``; set it per template with
``gcloud dataflow flex-template build ... --env AUDIENCE_SYNC_JOB=NAME``) -- and hands every flag to
the same command line as ``audience-sync JOB``: the pipeline that runs is the installed package's.
"""
from __future__ import annotations

import os
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main([os.environ.get("AUDIENCE_SYNC_JOB", "import"), *sys.argv[1:]]))
