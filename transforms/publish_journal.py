"""Publishing a run over the previous one, recoverable after a kill at any step: a publish journal.

A run writes everything under its own folder (``OUT/_incomplete-<id>/``; nightly:
``ROOT/_staging/dt=...-<id>/``), markers included: ``report.json`` (and the nightly ``_SUCCESS``
manifest, computed from the staged files). Then:

1. **commit**: ``OUT/_publish.json`` is written, naming the run folder, every file of the new
   version and the markers. Before it exists, nothing under ``OUT`` has changed (a failure or a kill
   leaves the old outputs complete; the next run deletes the run folder: *roll back*). Once it
   exists, the new version is complete in the run folder and the publish is *rolled forward*.
2. **apply** (idempotent; the same steps resume a killed publish):
   the old markers go first (from here a reader sees no ``report.json``: not a finished run); each
   staged file moves into its output folder; anything else in the output folders (stale parts,
   foreign files, sub-folders: the job owns them) is deleted; the markers move in last, in order
   (``report.json``, then ``_SUCCESS``); the journal and the run folder are deleted.

So a reader that trusts only a folder with its marker sees the complete old or the complete new
outputs, never a mix; a kill mid-publish leaves a folder without its marker until the next run into
``OUT`` (any job, under the output lock) finds the journal and completes it (:func:`recover`).
Leftover run folders (``_incomplete-*``, ``_staging/*``) hold profile IDs and partial files: they
are deleted at the next run's start (:func:`clean_leftovers`), never while a live run holds the lock.

Every change to storage goes through the four small functions at the top (``write_file``,
``_rename``, ``_delete``, ``_mkdirs``): the tests stop the publish before, or in the middle of, each
call.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import uuid
from dataclasses import asdict, dataclass

from apache_beam.io.filesystems import FileSystems

from transforms.errors import RunFailed
from transforms.output_lock import PROBE_PREFIX, OutputLock, probe_writable, write_error
from transforms.storage import glob, join_path

LOG = logging.getLogger("audience_sync.publish")
JOURNAL = "_publish.json"
INCOMPLETE = "_incomplete-"


def _is_remote(path: str) -> bool:
    return "://" in path


def write_file(path: str, data: bytes, mime_type: str = "application/json") -> None:
    """Write a small file; a full disk or a read-only folder fails with one line naming ``path``."""
    try:
        with FileSystems.create(path, mime_type=mime_type) as sink:
            sink.write(data)
    except OSError as exc:
        raise write_error(path, exc) from None


def write_whole(path: str, data: bytes, mime_type: str = "application/json") -> None:
    """Write a small file a reader trusts as it is (a state's ``_PENDING`` / ``_SUCCESS``) whole or not
    at all: a local one is written beside and renamed into place (killed, or on a full disk, it was
    left torn, and every later run failed on it); an object store's write is all or nothing already.
    A failed write raises as it would have, and leaves nothing beside; a killed one leaves an
    ``_incomplete-*`` file, a killed run's leftover: in an output or a nightly root the next run removes
    it (:func:`clean_leftovers`), in an export state's version folder the next run of that version
    (read by nothing: manifests and members are found by their own names)."""
    if _is_remote(path):
        with FileSystems.create(path, mime_type=mime_type) as sink:
            sink.write(data)
        return
    partial = join_path(posixpath.dirname(path), f"{INCOMPLETE}{uuid.uuid4().hex[:8]}.{posixpath.basename(path)}")
    try:
        with FileSystems.create(partial, mime_type=mime_type) as sink:
            sink.write(data)
        _rename([partial], [path])
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def _rename(sources: list[str], destinations: list[str]) -> None:
    if sources:
        FileSystems.rename(sources, destinations)


def _delete(paths: list[str]) -> None:
    """Delete files, and local folders with everything in them."""
    if paths:
        FileSystems.delete(paths)


def _mkdirs(path: str) -> None:
    if not _is_remote(path):
        os.makedirs(path, exist_ok=True)  # object stores have no folders


def _relative(path: str, folder: str) -> str:
    return path[len(folder.rstrip("/")) + 1:]


def _listing(folder: str, recursive: bool = False) -> list[str]:
    """Paths directly in ``folder`` (local: files and sub-folders; GCS: objects, every level when
    ``recursive``). A missing folder lists nothing."""
    if not _is_remote(folder):
        try:
            return sorted(join_path(folder, name) for name in os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
    return glob(join_path(folder, "**" if recursive else "*"), missing_ok=True, folders=True)


def _tree(folder: str) -> list[str]:
    """Every file under ``folder``, as paths relative to it."""
    if _is_remote(folder):
        return [_relative(p, folder) for p in glob(join_path(folder, "**"), missing_ok=True)]
    return [os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names]


@dataclass(frozen=True)
class Journal:
    """The publish journal: what the new version is, and where it is staged."""

    run_dir: str
    files: dict[str, list[str]]  # output folder -> the file names of the new version
    markers: list[str]  # written last, in this order (report.json; nightly: then _SUCCESS)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_journal(output_dir: str) -> Journal | None:
    """The journal under ``output_dir``; None if there is none. An unreadable journal (a kill while
    it was written) is not a commit: None, and it is deleted."""
    path = join_path(output_dir, JOURNAL)
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as handle:
            doc = json.loads(handle.read())
        return Journal(run_dir=doc["run_dir"], files={k: list(v) for k, v in doc["files"].items()},
                       markers=list(doc["markers"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        LOG.warning("%s: unreadable publish journal (a run killed while committing): not committed, removed", path)
        _delete([path])
        return None


def commit(output_dir: str, journal: Journal) -> None:
    """The commit point, then the publish. Everything in ``journal`` must be staged. A local output
    folder the run may not write into (another account's) fails before it: its moves would fail after."""
    for name in [] if _is_remote(output_dir) else sorted(journal.files):
        folder = join_path(output_dir, name)
        if os.path.isdir(folder):
            probe = join_path(folder, f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}")
            try:
                os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os.unlink(probe)
            except OSError as exc:
                raise write_error(folder, exc) from None
    write_file(join_path(output_dir, JOURNAL), journal.to_bytes())
    apply(output_dir, journal)


def apply(output_dir: str, journal: Journal) -> None:
    """Move the staged version in (see the module doc). Safe to repeat after a kill at any point:
    what is still staged is moved, what is already published stays."""
    run_dir = journal.run_dir
    staged = set(_tree(run_dir))
    staged_markers = [m for m in journal.markers if m in staged]
    stale_markers = [join_path(output_dir, m) for m in reversed(staged_markers)]
    _delete([p for p in stale_markers if FileSystems.exists(p)])  # unpublish: what readers go by
    moves = [f"{name}/{f}" for name, files in sorted(journal.files.items()) for f in files if f"{name}/{f}" in staged]
    if not _is_remote(output_dir):
        for name in sorted(journal.files):
            _mkdirs(join_path(output_dir, name))
    _rename([join_path(run_dir, m) for m in moves], [join_path(output_dir, m) for m in moves])
    foreign = []
    for name, files in sorted(journal.files.items()):
        final_dir, keep = join_path(output_dir, name), set(files)
        present = _listing(final_dir, recursive=True)
        missing = keep - {_relative(p, final_dir) for p in present}
        if missing:
            raise RunFailed(f"{join_path(output_dir, JOURNAL)}: cannot complete the publish, "
                            f"{join_path(final_dir, sorted(missing)[0])} is neither staged nor published")
        foreign += [p for p in present if _relative(p, final_dir) not in keep]  # the job owns its folders
    _delete(foreign)
    for marker in staged_markers:
        _rename([join_path(run_dir, marker)], [join_path(output_dir, marker)])
    _delete([join_path(output_dir, JOURNAL)])
    try:  # published: what is left of the run folder is the next run's to remove (clean_leftovers)
        remove_run_dir(run_dir)
    except Exception as exc:  # noqa: BLE001 - a read-only disk, a refused delete: the run stands published
        LOG.warning("%s: published; its run folder %s could not be removed (%s: %s): the next run into this folder "
                    "removes it", output_dir, run_dir, type(exc).__name__, getattr(exc, "strerror", None) or exc)


def recover(output_dir: str) -> str | None:
    """Complete an interrupted publish under ``output_dir``: ``"rolled forward"`` when a journal was
    found (the new version is now published), else None."""
    journal = read_journal(output_dir)
    if journal is None:
        return None
    LOG.warning("%s: completing the publish of an interrupted run (%s)", output_dir, journal.run_dir)
    apply(output_dir, journal)
    return "rolled forward"


def remove_run_dir(run_dir: str, keep: str | None = None) -> None:
    """Delete a run's folder and everything in it; with ``keep`` (a file's name), all but that file
    directly in it, which stays as it is (and on gs:// the folder's marker object, ``run_dir/``: deleted,
    it takes every object under it, ``keep`` too)."""
    if keep is not None:
        kept = join_path(run_dir, keep)
        _delete([p for p in _listing(run_dir, recursive=True) if p != kept and not (p.endswith("/") and kept.startswith(p))])
    elif _is_remote(run_dir):
        _delete(_listing(run_dir, recursive=True))
    elif os.path.isdir(run_dir):
        _delete([run_dir])


def clean_leftovers(folder: str, prefix: str = INCOMPLETE) -> list[str]:
    """Delete ``folder/<prefix>*`` (run folders of killed runs, or their write probes): call it
    holding the lock, after :func:`recover` (a journal names the run folder it still needs).
    Returns what was removed (first-level names)."""
    if _is_remote(folder):
        found = glob(join_path(folder, f"{prefix}**"), missing_ok=True, folders=True)
        removed = sorted({join_path(folder, _relative(p, folder).split("/")[0]) for p in found if _relative(p, folder)})
    else:
        found = removed = [p for p in _listing(folder) if posixpath.basename(p).startswith(prefix)]
    _delete(found)
    if removed:
        LOG.warning("%s: removed %d leftover(s) of killed runs", folder, len(removed))
    return removed


@contextlib.contextmanager
def hold_output(folder: str, job: str, options=None, partitions: str | None = None, staging: str | None = None):
    """The start of every run into ``folder``, and its end: take the output lock (a live run's
    output fails fast), complete an interrupted publish (the journal in ``folder``, or in each
    sub-folder matching ``partitions``: nightly's ``dt=*``), delete the run folders of killed runs
    (``_incomplete-*``; every sub-folder of ``staging``), probe that ``folder`` can be written; the
    lock is released when the block ends, whatever happened in it. Yields the names of the killed
    runs' folders removed (``_incomplete-*``)."""
    with OutputLock(folder, job, options):
        journals = [folder] if partitions is None else [
            posixpath.dirname(p) for p in glob(join_path(folder, partitions, JOURNAL), missing_ok=True)]
        for target in journals:
            recover(target)
        killed = clean_leftovers(folder)
        clean_leftovers(folder, PROBE_PREFIX)
        if staging is not None:
            clean_leftovers(join_path(folder, staging), prefix="")
        probe_writable(folder)
        yield [posixpath.basename(path.rstrip("/")) for path in killed]
