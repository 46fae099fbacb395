"""Pages written from reports already published: a run folder's page (from its ``report.json``) and a
nightly root's trend page (from its partitions' reports). The nightly job writes the root page after
its nights; ``audience-sync report`` writes either on demand. A run's own page is written by its
publish step (:func:`transforms.publish.publish_outputs`)."""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Callable

from apache_beam.io.filesystems import FileSystems

from transforms.errors import ConfigError, InputError
from transforms.html_report import PAGE, NightReport, render_nightly, render_run, write_page
from transforms.publish import REPORT, SUCCESS
from transforms.storage import absolute, join_path


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


# Checks the page's place before it is written: ``check(target, html)`` (the report verb's check_target).
Check = Callable[[str, str], None]


def write_run_page(folder: str, output: str | None = None, check: Check | None = None) -> str:
    """Render the page of the run in ``folder``; written to ``output`` (default: beside its report)."""
    target = output or join_path(folder, PAGE)
    html = render_run(read_report(folder))
    if check:
        check(target, html)
    write_page(target, html)
    return target


def write_nightly_page(root: str, partitions: list[tuple[str, str]], output: str | None = None,
                       unreadable: list[str] | None = None, check: Check | None = None) -> str:
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
    html = render_nightly(nights, unreadable or [])
    if check:
        check(target, html)
    write_page(target, html)
    return target


GENERATOR = b'<meta name="generator" content="audience-sync">'
# How far above a page its folder may be a run's (ROOT/dt=.../reconciled/ is 2; a folder made inside an
# output, 3): a report.json further up (one saved in a home folder) is no run of these pages'.
_OUTPUT_DEPTH = 3


def check_target(source: str, target: str, html: str) -> None:
    """Where the report verb may write the page of ``source`` (a run folder, partition or nightly root),
    else :class:`ConfigError` in one line: not over a file that is not a page of ours; not inside a
    run's folders (its outputs are read whole: a page among reconciled/'s parts failed every reader);
    beside a run's ``report.json`` only as that run's own ``report.html`` (another run's page there was
    taken for its own); and in a published partition only as its ``_SUCCESS`` lists it (the same bytes,
    or not listed: a release before the page), so the manifest still describes the night."""
    if FileSystems.exists(target) and not _is_folder(target):
        with FileSystems.open(target) as handle:
            head = handle.read(4096)
            if head and GENERATOR not in head:  # an empty file holds nothing to lose
                raise ConfigError(f"--output {target}: a file that is not a page audience-sync wrote: "
                                  "the page would replace it; name another file")
    parent = _parent(target)
    for folder in _ancestors(parent)[:_OUTPUT_DEPTH]:
        marked = [m for m in (REPORT, SUCCESS) if FileSystems.exists(join_path(folder, m))]
        if not marked:
            continue
        if folder != parent:
            raise ConfigError(f"--output {target}: inside the outputs of the run in {folder} (their readers read "
                              "every file there): write the page elsewhere")
        if folder != absolute(source):
            raise ConfigError(f"--output {target}: beside the report.json of another run ({folder}): the page "
                              "would be taken for that run's; write it elsewhere")
        if posixpath.basename(target) != PAGE:
            raise ConfigError(f"--output {target}: beside the report.json of the run in {folder}, where its page "
                              f"is {PAGE}: another would stay there, unchanged, after the folder's next run")
        if SUCCESS in marked and _listed_page(folder) not in (None, hashlib.sha256(html.encode("utf-8")).hexdigest()):
            raise ConfigError(f"{target}: its night's {SUCCESS} lists it with other bytes (a page of another "
                              "release): rewritten, the manifest would no longer describe the published night; "
                              "write the page elsewhere (--output FILE.html)")
        return


def _listed_page(folder: str) -> str | None:
    """The sha256 a published partition's ``_SUCCESS`` lists for its page (None: not listed)."""
    path = join_path(folder, SUCCESS)
    try:
        with FileSystems.open(path) as handle:
            files = json.loads(handle.read()).get("files", [])
        return next((f["sha256"] for f in files if f.get("path") == PAGE), None)
    except Exception:  # noqa: BLE001 - one line naming the file
        raise InputError(path, "cannot read the published night's manifest") from None


def same_path(a: str, b: str) -> bool:
    """Whether two paths name one file (``./report.html`` and ``report.html`` locally)."""
    return absolute(a) == absolute(b)


def _parent(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if "://" in path else os.path.dirname(os.path.abspath(path))


def _is_folder(path: str) -> bool:
    return "://" not in path and os.path.isdir(path)


def _ancestors(folder: str) -> list[str]:
    """``folder`` and the folders above it (on an object store, up to its bucket)."""
    folder = absolute(folder)
    if "://" in folder:
        scheme, _, rest = folder.partition("://")
        parts = rest.split("/")
        return [f"{scheme}://" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    out = [folder]
    while os.path.dirname(out[-1]) != out[-1]:
        out.append(os.path.dirname(out[-1]))
    return out


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
