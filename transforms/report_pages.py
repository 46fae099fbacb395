"""Pages written from reports already published: a run folder's page (from its ``report.json``) and a
nightly root's trend page (from its partitions' reports). The nightly job writes the root page after
its nights; ``audience-sync report`` writes either on demand. A run's own page is written by its
publish step (:func:`transforms.publish.publish_outputs`)."""
from __future__ import annotations

import json

from apache_beam.io.filesystems import FileSystems

from transforms.errors import InputError
from transforms.html_report import PAGE, NightReport, render_nightly, render_run, write_page
from transforms.publish import REPORT
from transforms.storage import join_path


def read_report(folder: str) -> dict:
    """A finished run's report; :class:`InputError` naming the file when there is none or it is not one."""
    path = join_path(folder, REPORT)
    try:
        with FileSystems.open(path) as handle:
            report = json.loads(handle.read())
    except Exception:  # noqa: BLE001 - one line, whatever went wrong (missing, unreadable, not JSON)
        raise InputError(path, "no readable report: not a finished run") from None
    if not isinstance(report, dict) or report.get("job") not in ("import", "export"):
        raise InputError(path, "not an import or export report")
    return report


def has_report(folder: str) -> bool:
    return FileSystems.exists(join_path(folder, REPORT))


def write_run_page(folder: str, output: str | None = None) -> str:
    """Render the page of the run in ``folder``; written to ``output`` (default: beside its report)."""
    target = output or join_path(folder, PAGE)
    write_page(target, render_run(read_report(folder)))
    return target


def write_nightly_page(root: str, partitions: list[tuple[str, str]], output: str | None = None) -> str:
    """Render the trend page of a nightly root from its published partitions ``[(date, folder name
    under root), ...]``; written to ``output`` (default: ``ROOT/report.html``)."""
    nights = [NightReport(day, f"{name}/{PAGE}", read_report(join_path(root, name))) for day, name in partitions]
    target = output or join_path(root, PAGE)
    write_page(target, render_nightly(nights))
    return target
