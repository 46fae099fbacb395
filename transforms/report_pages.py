"""Pages written from reports already published: a run folder's page (from its ``report.json``) and a
nightly root's trend page (from its partitions' reports). The nightly job writes the root page after
its nights; ``audience-sync report`` writes either on demand. A run's own page is written by its
publish step (:func:`transforms.publish.publish_outputs`)."""
from __future__ import annotations

import json
import os
import posixpath

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


def write_nightly_page(root: str, partitions: list[tuple[str, str]], output: str | None = None,
                       unreadable: list[str] | None = None) -> str:
    """Render the trend page of a nightly root from its published partitions ``[(date, folder name
    under root), ...]``; written to ``output`` (default: ``ROOT/report.html``). A night whose report
    cannot be read fails it (:class:`InputError`), unless ``unreadable`` is given: such nights' folder
    names are appended to it, and the page names them instead of showing them."""
    target = output or join_path(root, PAGE)
    nights = []
    for day, name in partitions:
        try:
            nights.append(NightReport(day, night_href(root, name, target), read_report(join_path(root, name))))
        except InputError:
            if unreadable is None:
                raise
            unreadable.append(name)
    write_page(target, render_nightly(nights, unreadable or []))
    return target


def night_href(root: str, name: str, page: str) -> str:
    """The link from ``page`` to the page of the night ``name`` under ``root``: relative, so the pages
    open from a copy of the folders too; a page in another bucket (or local against ``gs://``) links
    to the night's full path."""
    night = join_path(root, name, PAGE)
    if "://" not in night and "://" not in page:
        return os.path.relpath(os.path.abspath(night), os.path.dirname(os.path.abspath(page)))
    scheme, _, night_path = night.partition("://")
    page_scheme, _, page_path = page.partition("://")
    bucket, page_bucket = night_path.split("/", 1)[0], page_path.split("/", 1)[0]
    if (scheme, bucket) != (page_scheme, page_bucket):
        return night
    return posixpath.relpath(night_path, posixpath.dirname(page_path))
