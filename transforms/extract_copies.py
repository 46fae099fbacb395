"""Two files of one profile extract holding the same profiles: a copy (``profiles-copy.parquet``) or
yesterday's extract kept beside today's (``profiles-2026-12-05.parquet``), reached by one glob. Their
profiles were read twice, silently: profiles erased since came back with their old keys, and a
profile whose email changed kept the old email's memberships (exit 0).

Rows sharing a profile id are legitimate, in one file or across files (one row per email, spread
over the parts by the writer), so the ids alone cannot decide. A copy or an older extract holds the
same *rows* too, where the parts of one extract never hold one row twice: the rule asks for both.
Each reader sketches each file it reads (:class:`FileSketcher`, per file, before its batches are
gathered with other files'): the 256 smallest distinct 64-bit hashes of its profile ids and of its
rows as read (K-minimum values), of whole values (:func:`content_hashes`). The publish step judges
the whole extract once (:func:`check_extract_copies`), before anything is published.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from transforms.arrow_utils import plain_array
from transforms.digests import duckdb_connection
from transforms.errors import RunFailed

SKETCH_SIZE = 256  # hashes kept a file (K-minimum values): the share is estimated to ~3 % at 256 sampled
MIN_IDS = 1_000  # files with fewer distinct ids (as estimated) are not judged
SAME_SHARE = 0.5  # this share of the smaller file's ids, and of its rows, in the other: the same profiles
MIN_SAMPLE = 64  # sampled hashes of the smaller file needed to judge a pair (its ids and its rows)
_ALL = np.uint64(2**64 - 1)
_EMPTY = np.zeros(0, np.uint64)


class FileSketch(NamedTuple):
    """A file's sketch: the ``SKETCH_SIZE`` smallest distinct hashes of its ids and of its rows, sorted."""

    path: str
    ids: np.ndarray
    rows: np.ndarray


class FileSketcher:
    """The sketch of one file, built batch by batch (:meth:`add`); :meth:`sketch` once it is read."""

    def __init__(self):
        self._ids, self._rows = _EMPTY, _EMPTY

    def add(self, profiles: pa.Table) -> None:
        if not profiles.num_rows:
            return
        ids, rows = content_hashes(profiles)
        self._ids = smallest_distinct(np.concatenate([self._ids, smallest_distinct(ids)]))
        self._rows = smallest_distinct(np.concatenate([self._rows, smallest_distinct(rows)]))

    def sketch(self, path: str) -> FileSketch:
        return FileSketch(path, self._ids, self._rows)


def content_hashes(profiles: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row: DuckDB's 64-bit hash of the profile id, and of the row as read (every column of the
    standard table; a list with its length). Whole values are hashed: ``stable_hash.hash64`` reads a
    string's ends only (ids differing in their middle, long visitor IDs, would look shared), and in
    numpy over every column it cost 4 times DuckDB's query (0.54 s a 1M file, against 0.14 s)."""
    cols, args = {"id": plain_array(profiles["profile_id"])}, ["id"]
    for i, name in enumerate(c for c in profiles.column_names if c != "profile_id"):
        cols[f"v{i}"] = plain_array(profiles[name])
        args.append(f"v{i}, len(v{i})" if pa.types.is_list(cols[f"v{i}"].type) else f"v{i}")
    con = duckdb_connection()
    con.register("audience_sync_sketch", pa.table(cols))
    try:
        out = con.sql(f"SELECT hash(id) AS ih, hash({', '.join(args)}) AS rh FROM audience_sync_sketch").fetchnumpy()
    finally:
        con.unregister("audience_sync_sketch")
    return np.asarray(out["ih"], np.uint64), np.asarray(out["rh"], np.uint64)


def smallest_distinct(hashes: np.ndarray, k: int = SKETCH_SIZE) -> np.ndarray:
    """The ``k`` smallest distinct values of ``hashes``, sorted. A partition first: when the ``4 k``
    smallest values (with repeats) hold ``k`` distinct ones, those are the ``k`` smallest."""
    m = min(len(hashes), 4 * k)
    if m < len(hashes):
        few = np.unique(np.partition(hashes, m - 1)[:m])
        if len(few) >= k:
            return few[:k]
    return np.unique(hashes)[:k]


def distinct_estimate(hashes: np.ndarray) -> float:
    """A file's distinct values from its sketch: exact under ``SKETCH_SIZE``, else ``(k-1) / max``."""
    if len(hashes) < SKETCH_SIZE:
        return float(len(hashes))
    return (SKETCH_SIZE - 1) / (float(hashes[-1]) / 2.0**64)


def contained(small: np.ndarray, big: np.ndarray) -> tuple[float, int]:
    """The share of ``small``'s values in ``big``'s, estimated on the hashes both sketches cover
    (below the smaller of their maxima; a sketch not full covers every hash), and the sample it is
    estimated on (``small``'s hashes there)."""
    limit = min(small[-1] if len(small) >= SKETCH_SIZE else _ALL, big[-1] if len(big) >= SKETCH_SIZE else _ALL)
    sample = small[small <= limit]
    if not len(sample):
        return 0.0, 0
    return float(np.isin(sample, big[big <= limit], assume_unique=True).mean()), len(sample)


def candidate_pairs(sketches: list[FileSketch], least: int) -> list[tuple[int, int]]:
    """The pairs of files (indexes, in order) whose id sketches share ``least`` hashes or more: the
    hashes indexed to their files (sorted once), never every pair compared."""
    owners = np.concatenate([np.full(len(s.ids), i, np.int64) for i, s in enumerate(sketches)] or [np.zeros(0, np.int64)])
    hashes = np.concatenate([s.ids for s in sketches] or [_EMPTY])
    order = np.argsort(hashes, kind="stable")
    hashes, owners = hashes[order], owners[order]
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(hashes)])
    pairs: dict[tuple[int, int], int] = {}
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):  # a hash in several files
        files = sorted(set(owners[start:start + size].tolist()))
        for a in range(len(files)):
            for b in range(a + 1, len(files)):
                pairs[(files[a], files[b])] = pairs.get((files[a], files[b]), 0) + 1
    return sorted(pair for pair, n in pairs.items() if n >= least)


def check_extract_copies(sketches: list[FileSketch]) -> None:
    """Raise :class:`RunFailed` (nothing published) when two files of the extract, each of
    ``MIN_IDS`` distinct ids or more, hold mostly the same profiles: ``SAME_SHARE`` of the smaller
    one's ids in the other, and of its rows (a copy, an older extract beside it). The parts of one
    extract share no row, and few ids (a profile's rows spread over parts by the writer). Smaller
    files are not judged, nor a pair whose smaller file's sample is under ``MIN_SAMPLE`` (a file of
    1,000 ids beside one of 1M): a known limit. The message names both files and the share, never an id."""
    sketches = sorted(sketches, key=lambda s: s.path)
    judged = [s for s in sketches if distinct_estimate(s.ids) >= MIN_IDS]
    for a, b in candidate_pairs(judged, int(MIN_SAMPLE * SAME_SHARE)):
        big, small = sorted((judged[a], judged[b]), key=lambda s: (-distinct_estimate(s.ids), s.path))
        ids, sampled = contained(small.ids, big.ids)
        rows, rows_sampled = contained(small.rows, big.rows)
        if min(sampled, rows_sampled) >= MIN_SAMPLE and ids >= SAME_SHARE and rows >= SAME_SHARE:
            raise RunFailed(f"profiles.path: {big.path} and {small.path} hold the same profiles (~{ids:.0%} of "
                            f"{small.path}'s ids are in {big.path}, ~{rows:.0%} of its rows): a copy or an older "
                            "extract beside it? narrow the glob. Nothing was published")
