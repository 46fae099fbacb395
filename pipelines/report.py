"""Write the HTML report of a finished run, a nightly partition or a nightly root.

    audience-sync report PATH [--output FILE]
    python -m pipelines.report PATH [--output FILE]

PATH (local or gs://) is a run folder (an import or export output, or a nightly partition
``dt=YYYY-MM-DD/``: the folder of a ``report.json``), or a nightly root (the folder of the
``dt=YYYY-MM-DD/`` partitions: match rate and members per data source over the published nights).
The page is written as ``report.html`` in PATH, or to ``--output``: never over a file that is not a page,
into a run's folders, beside another run's report or over a published night's page its ``_SUCCESS``
lists otherwise (:func:`transforms.report_pages.check_target`). Runs write their page themselves;
this verb rewrites it, e.g. for runs made before it existed or after an upgrade.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import re
import sys

from apache_beam.io.filesystems import FileSystems

from pipelines import launch
from pipelines.flags import check_given
from pipelines.nightly import partition_name, published_dates
from transforms.errors import ConfigError
from transforms.html_report import PAGE
from transforms.output_lock import LOCK, OutputLock
from transforms.publish_journal import INCOMPLETE
from transforms.report_pages import check_target, has_report, same_path, write_nightly_page, write_run_page
from transforms.storage import absolute, check_gcs_credentials, glob, join_path


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync report", description=__doc__.split("\n")[0])
    parser.add_argument("path", metavar="PATH", help="a run folder, nightly partition or nightly root (local path or gs://)")
    parser.add_argument("--output", default=None, help="where to write the page (default: PATH/report.html)")
    known = parser.parse_args(argv)
    check_given(parser, sys.argv[1:] if argv is None else list(argv))
    return known


def run(argv=None) -> dict:
    """Write the page; returns ``{"kind": "run" | "nightly root", "page": path, "nights": n}``."""
    known = parse_args(argv)
    path = known.path.rstrip("/")
    if known.output is not None and not known.output.lower().endswith((".html", ".htm")):
        # A slip such as ROOT/dt=.../report.json would write the page over a night's report.
        raise ConfigError(f"--output {known.output}: a page is written as HTML; name it *.html")
    check_gcs_credentials([path, known.output])
    def check(target: str, html: str) -> None:
        check_target(path, target, html)

    if has_report(path):
        with _held(path, known.output):
            return {"kind": "run", "page": write_run_page(path, known.output, check)}
    days = published_dates(path)
    if days:
        with _held(path, known.output):
            page = write_nightly_page(path, [(day.isoformat(), partition_name(day)) for day in days], known.output,
                                      check=check)
        return {"kind": "nightly root", "page": page, "nights": len(days)}
    raise ConfigError(_no_report(path))


def _held(path: str, output: str | None):
    """The output lock of the folder whose own page is rewritten in place (a partition's: its root's,
    the nightly job's), held while its report is read and its page written: a run republishing the
    folder meanwhile moves its page in before its report.json, and the page of the report read before
    would stand beside the new one. A live run's lock fails at once naming it. A page written
    elsewhere only reads the folder (no lock: it may be read-only)."""
    if output is not None and not same_path(output, join_path(path, PAGE)):
        return contextlib.nullcontext()
    folder = absolute(path)  # '.' in a night's folder is that night
    parent, name = posixpath.split(folder)
    return OutputLock(parent if re.fullmatch(r"dt=\d{4}-\d{2}-\d{2}", name) else folder, "report")


def _run_leftovers(path: str) -> bool:
    """Whether ``path`` holds a run's folder (``_incomplete-*``, a nightly's ``_staging/``): a run that did not finish."""
    if "://" in path:
        return any(glob(join_path(path, pattern), missing_ok=True) for pattern in (INCOMPLETE + "**", "_staging/**"))
    return os.path.isdir(path) and any(n.startswith(INCOMPLETE) or n == "_staging" for n in os.listdir(path))


def _no_report(path: str) -> str:
    """Why ``path`` has no page to write: a file named, a run writing it, one that did not finish, or not a run."""
    if ("://" in path or not os.path.isdir(path)) and FileSystems.exists(path):
        parent = posixpath.dirname(path) if "://" in path else os.path.dirname(path) or "."
        return f"{path}: a file, not a folder: name the folder of its report.json ({parent})"
    if glob(join_path(path, LOCK), missing_ok=True):
        return f"{path}: no report.json yet: a run is writing it ({join_path(path, LOCK)})"
    if _run_leftovers(path):
        return f"{path}: no report.json: its run did not finish (killed before its report.json; rerun it)"
    return f"{path}: no report.json and no published dt=YYYY-MM-DD/ partition: not a run folder or nightly root"


def summary_lines(result: dict) -> list[str]:
    nights = f" ({result['nights']} night{'s' if result['nights'] != 1 else ''})" if "nights" in result else ""
    return [f"report: {result['page']}{nights}"]


def main(argv=None) -> int:
    return launch.run_job_cli(run, argv, summary_lines)


if __name__ == "__main__":
    sys.exit(main())
