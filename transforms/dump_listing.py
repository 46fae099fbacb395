"""Which files a ``segments`` glob lists are dumps, and what else a listing shows beside them:
control files, uploads in progress, a folder named as a dump. Names and listings only: reading a
dump's bytes is :mod:`transforms.dump_files`.
"""
from __future__ import annotations

import posixpath

from transforms.dump_names import parse_dump_name


# Names transfer tools give a file while it is still being written (WinSCP .filepart, browsers .part /
# .crdownload, editors ~, ...): such a file is incomplete, never a dump, whatever it ends up called.
PARTIAL_SUFFIXES = (".filepart", ".part", ".partial", ".crdownload", ".download", ".tmp", ".temp",
                    ".incomplete", ".uploading", ".swp", "~")


def is_dump_file(path: str) -> bool:
    """Control files (``.info``), hidden or temporary files (names starting with ``.`` or ``_``) and
    partial uploads (:data:`PARTIAL_SUFFIXES`, any case, e.g. ``*.sync.gz.filepart``) are not dumps."""
    base = posixpath.basename(path)
    lower = base.lower()
    return not (lower.endswith(".info") or base.startswith((".", "_")) or lower.endswith(PARTIAL_SUFFIXES))


def unfinished_delivery(listed: list[str], wider: list[str] = ()) -> list[str]:
    """Of the files a ``segments`` glob lists, where none is a dump: what a delivery that did not
    finish leaves (a control file whose dumps are not there, an upload in progress); hidden and
    ``_`` names are none. Such a night is no night without a delivery. ``wider``: what
    :func:`upload_glob` lists, for the uploads in progress a glob naming the dumps' suffix misses."""
    if any(is_dump_file(path) for path in listed):
        return []
    shown = [path for path in listed if not posixpath.basename(path).startswith((".", "_"))]
    return shown or [path for path in wider if not posixpath.basename(path).startswith((".", "_"))
                     and upload_of(path) is not None]


def upload_of(path: str) -> str | None:
    """The file an upload in progress (:data:`PARTIAL_SUFFIXES`, any case) is to become, else None."""
    suffix = next((s for s in PARTIAL_SUFFIXES if path.lower().endswith(s)), None)
    return None if suffix is None else path[:-len(suffix)]


def upload_glob(pattern: str) -> str | None:
    """The glob that also lists ``pattern``'s uploads in progress, when it names the dumps' suffix
    ('*.sync.gz' lists no '….sync.gz.filepart': such a night was taken for one without a delivery)."""
    return None if pattern.endswith("*") else pattern + "*"


def uploads_beside(dumps: list[str], listed: list[str]) -> list[str]:
    """Of the files a data source's glob (and :func:`upload_glob`) lists beside
    its ``dumps``: uploads in progress of a dump (its name parses once the suffix is cut) that is not
    there, a split or a delivery still being written. Read without it, a full dump missing a split
    removed its users (a missing last split shows nowhere else without a control file)."""
    if not dumps:
        return []
    return sorted({path for path in listed if (final := upload_of(path)) is not None and final not in dumps
                   and not posixpath.basename(path).startswith((".", "_")) and parse_dump_name(final) is not None})


def dump_folders(pattern: str) -> list[str]:
    """The folders a ``segments`` glob matches by name that are named as a dump (a platform's name,
    or '.sync' / '.sync.gz': an archive tool extracted the dump into a folder of its name). A glob
    lists files, locally as on gs:// ('*' stops at '/'), so such a dump was skipped; a folder of
    another name (old/) is not read and refuses nothing. A path without wildcards: storage.folder_hint;
    '**' reads below folders."""
    name = pattern.rstrip("/")
    if name != pattern or "**" in name or not any(c in name for c in "*?["):
        return []
    from transforms.storage import glob  # Beam's file systems: imported where files are listed, as in _open

    depth = name.count("/") + 1  # the matched folder: as many parts of a file's path below it
    folders = {"/".join(path.split("/")[:depth]) for path in glob(name + "/**", missing_ok=True)}
    return sorted(f for f in folders if is_dump_file(f)
                  and (parse_dump_name(f) is not None or f.lower().endswith((".sync", ".sync.gz"))))


def dump_paths(pattern: str, missing_ok: bool = False) -> list[str]:
    """The dump files a data source's ``segments`` glob matches (sorted; see :func:`is_dump_file`).
    With ``missing_ok``, a failed match is no file instead of an error."""
    from transforms.storage import glob  # Beam's file systems: imported where files are listed, as in _open

    return [p for p in glob(pattern, missing_ok=missing_ok) if is_dump_file(p)]
