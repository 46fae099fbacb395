"""Two files of one profile extract holding the same profiles: a copy (``profiles-copy.parquet``) or
yesterday's extract kept beside today's (``profiles-2026-12-05.parquet``), reached by one glob. Their
profiles were read twice, silently: profiles erased since came back with their old keys, and a
profile whose email changed kept the old email's memberships (exit 0).

Rows sharing a profile id are legitimate, in one file or across files (one row per email, spread
over the parts by the writer), so the ids alone cannot decide. A copy or an older extract holds the
same *rows* too, where the parts of one extract never hold one row twice: the rule asks for both.
Each reader sketches each file it reads (:class:`FileSketcher`, per file, before its batches are
gathered with other files'): the 256 smallest distinct 64-bit hashes of its profile ids (K-minimum
values) and the hashes of those ids' rows as read, of whole values (:func:`whole_hash`). The publish
step judges the whole extract once (:func:`check_extract_copies`), before anything is published: its
files by pairs, and its rows together (:func:`repeated_rows`: a file beside an older extract's parts).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import plain_array
from transforms.errors import RunFailed
from transforms.stable_hash import MIX, hash64, mix64

SKETCH_SIZE = 256  # hashes kept a file (K-minimum values): the share is estimated to ~3 % at 256 sampled
MIN_IDS = 1_000  # files with fewer distinct ids (as estimated) are not judged
SAME_SHARE = 0.5  # this share of the smaller file's ids, and of its rows, in the other: the same profiles
MIN_SAMPLE = 64  # sampled hashes of the smaller file needed to judge a pair (its ids and its rows)
_ALL = np.uint64(2**64 - 1)
_EMPTY = np.zeros(0, np.uint64)
_REMEDY = ("a copy or an older extract beside it? narrow the glob (or, where files do repeat rows, set "
           "profiles.files_may_repeat_rows: true). Nothing was published")


class FileSketch(NamedTuple):
    """A file's sketch: the ``SKETCH_SIZE`` smallest distinct hashes of its ids, sorted; the hashes of
    the distinct rows of those ids (``rows``), with their ids' (``row_ids``)."""

    path: str
    ids: np.ndarray
    rows: np.ndarray
    row_ids: np.ndarray


class FileSketcher:
    """The sketch of one file, built batch by batch (:meth:`add`); :meth:`sketch` once it is read.
    Only the rows of the ids kept so far are hashed whole (a few hundred a file, whatever its size)."""

    def __init__(self):
        self._ids, self._rows, self._row_ids = _EMPTY, _EMPTY, _EMPTY

    def add(self, profiles: pa.Table) -> None:
        if not profiles.num_rows:
            return
        ids = whole_hash(profiles["profile_id"])
        self._ids = smallest_distinct(np.concatenate([self._ids, smallest_distinct(ids)]))
        limit = _limit(self._ids)
        taken = np.flatnonzero(ids <= limit)
        kept = self._row_ids <= limit
        rows = np.concatenate([self._rows[kept], row_hashes(profiles.take(pa.array(taken)), ids[taken])])
        self._rows, first = np.unique(rows, return_index=True)
        self._row_ids = np.concatenate([self._row_ids[kept], ids[taken]])[first]

    def sketch(self, path: str) -> FileSketch:
        return FileSketch(path, self._ids, self._rows, self._row_ids)


def whole_hash(values) -> np.ndarray:
    """:func:`~transforms.stable_hash.hash64` of every value, whole: it reads a string's first and last
    16 bytes (and its length), so the middle of longer ones is hashed again, until none is left (ids
    differing in their middle only would look shared). Numpy: no per-row Python, no query a batch."""
    values = plain_array(values)
    if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)):
        values = values.cast(pa.string())
    acc = hash64(values)
    middle = values.cast(pa.binary())
    while len(middle) and (pc.max(pc.binary_length(middle)).as_py() or 0) > 32:
        middle = pc.binary_slice(middle, 16, -16)
        acc = acc * MIX + hash64(middle)
    return acc


def row_hashes(profiles: pa.Table, ids: np.ndarray) -> np.ndarray:
    """A hash of each row as read (its id's, ``ids``, and every other column of the standard table's,
    in order; a list's entries by position, and its length)."""
    rows = ids.copy()
    for name in profiles.column_names:
        if name != "profile_id":
            column = plain_array(profiles[name])
            rows = rows * MIX + (_list_hash(column) if pa.types.is_list(column.type) else whole_hash(column))
    return mix64(rows)


def _list_hash(lists: pa.ListArray) -> np.ndarray:
    offsets = lists.offsets.to_numpy().astype(np.int64)
    first, offsets = offsets[0], offsets - offsets[0]
    entries = whole_hash(lists.values.slice(first, offsets[-1]))
    lengths = np.diff(offsets)
    position = np.arange(len(entries), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    weighted = entries * (position.astype(np.uint64) * np.uint64(2) + np.uint64(1))
    summed = np.concatenate([np.zeros(1, np.uint64), np.cumsum(weighted, dtype=np.uint64)])
    return (summed[offsets[1:]] - summed[offsets[:-1]]) * MIX + lengths.astype(np.uint64)


def _limit(ids: np.ndarray) -> np.uint64:
    """The hashes a sketch covers: up to its largest (all of them when it is not full)."""
    return ids[-1] if len(ids) >= SKETCH_SIZE else _ALL


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


def shared_ids(small: FileSketch, big: FileSketch) -> tuple[float, int]:
    """The share of ``small``'s ids in ``big``, estimated on the hashes both sketches cover (below
    the smaller of their maxima), and the sample it is estimated on (``small``'s ids there)."""
    limit = min(_limit(small.ids), _limit(big.ids))
    return _share(small.ids[small.ids <= limit], big.ids[big.ids <= limit])


def shared_rows(small: FileSketch, big: FileSketch) -> tuple[float, int]:
    """The share of ``small``'s rows in ``big``, among the rows of the ids both sketches cover (each
    sketch holds every row of those ids), and the rows it is estimated on."""
    limit = min(_limit(small.ids), _limit(big.ids))
    return _share(small.rows[small.row_ids <= limit], big.rows[big.row_ids <= limit])


def _share(sample: np.ndarray, other: np.ndarray) -> tuple[float, int]:
    if not len(sample):
        return 0.0, 0
    return float(np.isin(sample, other, assume_unique=True).mean()), len(sample)


def candidate_pairs(sketches: list[FileSketch], least: int) -> list[tuple[int, int]]:
    """The pairs of files (indexes, in order) whose id sketches share ``least`` hashes or more: the
    hashes indexed to their files (sorted once), never every pair compared."""
    hashes, owners = _by_hash([s.ids for s in sketches])
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(hashes)])
    pairs: dict[tuple[int, int], int] = {}
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):  # a hash in several files
        files = sorted(set(owners[start:start + size].tolist()))
        for a in range(len(files)):
            for b in range(a + 1, len(files)):
                pairs[(files[a], files[b])] = pairs.get((files[a], files[b]), 0) + 1
    return sorted(pair for pair, n in pairs.items() if n >= least)


def _by_hash(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of ``arrays`` (one a file) sorted, and the index of the file each came from (a
    file's own in its order: files in order among equal hashes)."""
    owners = np.concatenate([np.full(len(a), i, np.int64) for i, a in enumerate(arrays)] or [np.zeros(0, np.int64)])
    hashes = np.concatenate(arrays or [_EMPTY])
    order = np.argsort(hashes, kind="stable")
    return hashes[order], owners[order]


def check_extract_copies(sketches: list[FileSketch]) -> None:
    """Raise :class:`RunFailed` (nothing published) when two files of the extract, each of
    ``MIN_IDS`` distinct ids or more, hold mostly the same profiles: ``SAME_SHARE`` of the smaller
    one's ids in the other, and of its rows (a copy, an older extract beside it). The parts of one
    extract share no row, and few ids (a profile's rows spread over parts by the writer). Smaller
    files are not judged, nor a pair whose smaller file's sample is under ``MIN_SAMPLE`` (a file of
    1,000 ids beside one of 1M); the extract's rows are then judged together (:func:`repeated_rows`):
    half of them in two files fail it too. The message names the files and the share, never an id."""
    sketches = sorted(sketches, key=lambda s: s.path)
    judged = [s for s in sketches if distinct_estimate(s.ids) >= MIN_IDS]
    for a, b in candidate_pairs(judged, int(MIN_SAMPLE * SAME_SHARE)):
        big, small = sorted((judged[a], judged[b]), key=lambda s: (-distinct_estimate(s.ids), s.path))
        ids, sampled = shared_ids(small, big)
        rows, rows_sampled = shared_rows(small, big)
        if min(sampled, rows_sampled) >= MIN_SAMPLE and ids >= SAME_SHARE and rows >= SAME_SHARE:
            raise RunFailed(f"profiles.path: {big.path} and {small.path} hold the same profiles (~{ids:.0%} of "
                            f"{small.path}'s ids are in {big.path}, ~{rows:.0%} of its rows): {_REMEDY}")
    share, sampled, (a, b) = repeated_rows(sketches)
    if sampled >= MIN_SAMPLE and share >= SAME_SHARE:
        raise RunFailed(f"profiles.path: ~{share:.0%} of the extract's rows are in two of its files, e.g. {a} and "
                        f"{b}: {_REMEDY}")


def repeated_rows(sketches: list[FileSketch]) -> tuple[float, int, tuple[str, str]]:
    """The share of the extract's rows found in another of its files too, estimated on the rows of
    the ids every sketch covers (below the smallest of their maxima: each file's rows sampled
    alike, however many files the rows are spread over), the rows it is estimated on, and the
    two files sharing the most of them. What the pairs miss: an older extract in one file beside
    today's in 200 parts (each part's sample under the big file's sketch is too small to judge).
    Nothing is judged under ``MIN_IDS`` ids in all (as for a pair)."""
    if not sketches or sum(distinct_estimate(s.ids) for s in sketches) < MIN_IDS:
        return 0.0, 0, ("", "")
    limit = min(_limit(s.ids) for s in sketches)
    hashes, owners = _by_hash([s.rows[s.row_ids <= limit] for s in sketches])  # (distinct within a file)
    same = hashes[1:] == hashes[:-1]  # a row and the next of the same hash: two files
    repeated = np.zeros(len(hashes), bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    if not repeated.any():
        return 0.0, len(hashes), ("", "")
    pairs = np.flatnonzero(same)
    counted = np.unique(np.stack([owners[pairs], owners[pairs + 1]], axis=1), axis=0, return_counts=True)
    a, b = counted[0][np.argmax(counted[1])]
    return float(repeated.mean()), len(hashes), (sketches[a].path, sketches[b].path)
