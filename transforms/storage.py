"""Paths and globs, local or ``gs://``, through Beam's FileSystems: the one place every module
lists files, so they all sort and fail the same way."""
from __future__ import annotations

import posixpath

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.errors import InputError


def join_path(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if "://" in base else posixpath.join(base, *parts)


def open_for_arrow(path: str):
    """A file to hand to an Arrow reader: a local file memory-mapped (Arrow reads its pages in
    place, no copy through a Python file object), anything else through FileSystems. The 10M
    profiles' Parquet extract (672 MB) reads in 1.8 s instead of 2.0-2.5 s on its own; a nightly's
    night 2 (10M profiles, 1M dump lines) 15.34 -> 14.31 s, 6 alternating runs, its kernel time
    5.7 -> 4.0 s; peak RSS unchanged (the mapped pages are the page cache's, unmapped on close)."""
    import pyarrow as pa

    return FileSystems.open(path) if "://" in path else pa.memory_map(path)


def glob(pattern: str, missing_ok: bool = False) -> list[str]:
    """Sorted paths matching ``pattern``. With ``missing_ok``, a failed match (e.g. a folder that
    does not exist) is an empty list instead of an error."""
    try:
        return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    except Exception:  # noqa: BLE001 - only swallowed when asked to
        if missing_ok:
            return []
        raise


class MatchFiles(beam.DoFn):
    """A glob -> its files, sorted; no match fails the run naming the glob."""

    def __init__(self, what: str):
        self._what = what

    def process(self, pattern: str):
        paths = glob(pattern)
        if not paths:
            raise InputError(pattern, f"no {self._what} matches")
        yield from paths
