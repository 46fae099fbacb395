"""Mismatch diagnosis, step 1: a bounded, deterministic sample of each data source's lines without a
match -- the lines the join found no profile for, and the lines whose ID was rejected for a reason an
alternative setting could explain (a digest of another encoding or length, a visitor ID that lost its
leading zeros, a token that does not decrypt).

A sampled line is ``(hash, reason, value)``: ``value`` is the join key for a line the join missed
(a digest's 32 bytes, a packed visitor ID, a plain ID's or decrypted address's UTF-8 bytes) and the
raw dump ID for a rejected line; ``hash`` is :func:`~transforms.stable_hash.hash64` of ``value``
mixed with the line's place (its file and line number, :func:`place_hashes`): lines are drawn one
by one, so the sample's shares are the lines'. Hashed by value alone, a value on many lines (the
digest of an empty address on 1,500 of 2,500) came into the sample whole or not at all, and a
finding said 200 of 200 sampled lines where 40% of the lines were.
The sample keeps the ``k`` lines of smallest ``(hash, value, reason)``: any runner, bundle order or
number of workers gives the same rows, and the selection merges (the bottom k of a union is the
bottom k of the parts' bottom k), so every chunk of a dump, and the join's bundle of shards for each
data source, sends at most ``k`` lines.

The sample holds record values: it only travels inside the pipeline (a side input of the diagnosis
steps) and is never written, logged or reported; findings carry counts.
"""
from __future__ import annotations

import posixpath

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import plain_array
from transforms.reasons import Category, Reason
from transforms.stable_hash import hash64

SAMPLE_SCHEMA = pa.schema([("hash", pa.uint64()), ("reason", pa.string()), ("value", pa.binary())])
# The reason of a sampled line that matched no profile but was kept in the file audience.
KEPT_IN_FILE_AUDIENCE = Category.FILE_AUDIENCE.value
# Rejections an alternative setting may explain (the others -- an empty line, a ':' in a plain ID --
# no setting fixes).
SAMPLED_REJECTIONS = (
    Reason.INVALID_HASH, Reason.INVALID_VISITOR_ID, Reason.DECRYPT_FAILED, Reason.INVALID_PLAINTEXT,
    Reason.UNKNOWN_KEY, Reason.EXPIRED_KEY, Reason.KEY_NOT_ACTIVE,
)
_SORT = [("hash", "ascending"), ("value", "ascending"), ("reason", "ascending")]


def sampled_from(entry: dict) -> int:
    """The lines of a data source's report entry the sample is drawn from: unmatched, kept in the file
    audience, or rejected for a reason in SAMPLED_REJECTIONS (not an empty or ':' ID, a missing value:
    no setting explains those, and the sample never holds them)."""
    rejected = sum(entry["rejected_by_reason"].get(r, 0) for r in SAMPLED_REJECTIONS)
    return entry[Category.UNMATCHED] + entry[Category.FILE_AUDIENCE] + rejected


def rejected_rows(sample: pa.Table) -> np.ndarray:
    """The rows of a sample that are rejected IDs (not lines the join found no profile for)."""
    missed = pa.array([str(Reason.NO_MATCHING_PROFILE), KEPT_IN_FILE_AUDIENCE])
    return np.flatnonzero(~pc.is_in(plain_array(sample["reason"]), value_set=missed).to_numpy(zero_copy_only=False))


def bottom_k(table: pa.Table, k: int, ordered: bool = False) -> pa.Table:
    """The ``k`` rows of smallest ``(hash, value, reason)`` -- sorted in that order when some are
    dropped, or when asked (``ordered``); otherwise all rows, as they are."""
    if k <= 0 or table.num_rows == 0:
        return SAMPLE_SCHEMA.empty_table()
    if table.num_rows > k:  # keep the k smallest hashes (and their ties) before sorting
        hashes = plain_array(table["hash"]).to_numpy()
        cut = np.partition(hashes, k - 1)[k - 1]
        table = table.filter(pa.array(hashes <= cut))
    elif not ordered:
        return table
    return table.take(pa.array(_order(table)[:k]))  # a compact copy


def _order(table: pa.Table) -> np.ndarray:
    """Row order by ``(hash, value, reason)``: by hash alone (numpy) unless rows of equal hash differ
    (a hash collision, rare; equal rows -- an ID on several lines -- are interchangeable)."""
    hashes = plain_array(table["hash"]).to_numpy()
    order = np.argsort(hashes, kind="stable")
    tied = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if len(tied):
        first, second = pa.array(order[tied]), pa.array(order[tied + 1])
        for column in ("value", "reason"):
            values = plain_array(table[column])
            if not pc.all(pc.equal(values.take(first), values.take(second))).as_py():
                return pc.sort_indices(table, sort_keys=_SORT).to_numpy()
    return order


def place_hashes(files: pa.Array | pa.ChunkedArray | str, lines: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable hash of each line's place in the dumps: its file's name (``files``: one path, or one
    per line, dictionary-encoded or not; the name, not the folder: a copy of the dumps elsewhere, on
    gs:// or in another run folder, gives the same sample) and its line number."""
    numbers = plain_array(lines).to_numpy(zero_copy_only=False).astype(np.uint64)
    if isinstance(files, str):
        at = np.full(len(numbers), _name_hashes([files])[0], dtype=np.uint64)
    else:
        chunks = files.chunks if isinstance(files, pa.ChunkedArray) else [files]
        at = np.concatenate([np.zeros(0, np.uint64)] + [_file_hashes(chunk) for chunk in chunks])
    return hash64(pa.array(at + numbers * _LINE_STEP))


def _file_hashes(files: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(files.type):  # each path once
        return _name_hashes(files.dictionary.to_pylist())[files.indices.to_numpy(zero_copy_only=False)]
    names, rows = np.unique(np.asarray(files.to_pylist(), dtype=object), return_inverse=True)
    return _name_hashes(list(names))[rows]


def _name_hashes(paths: list[str]) -> np.ndarray:
    return hash64(pa.array([posixpath.basename(p) for p in paths], pa.string()))


_LINE_STEP = np.uint64(0xD6E8FEB86659FD93)  # an odd constant: a file's line numbers spread over 64 bits


def candidates(values: pa.Array, reasons: pa.Array | str, k: int, places: np.ndarray | None = None) -> pa.Table:
    """Sampled-line candidates of one shard or chunk: its ``k`` lines of smallest hash. ``places``:
    the lines' :func:`place_hashes` (the dump reader and the join give them; without, a value's
    lines share one hash)."""
    values = plain_array(values)
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    if isinstance(reasons, str):
        reasons = pa.repeat(pa.scalar(reasons), len(values))
    hashes = hash64(values) if places is None else hash64(values) ^ places
    table = pa.table({"hash": pa.array(hashes), "reason": plain_array(reasons, text="cast"), "value": values},
                     schema=SAMPLE_SCHEMA)
    return bottom_k(table, k)


def rejected_candidates(parsed: pa.Table, rejected: pa.Table | None, k: int, path: str | None) -> pa.Table | None:
    """Candidates among a chunk's rejected IDs (``rejected``: the rejections of ``parsed``'s lines,
    in their order, as :func:`transforms.keys.dump_keys` gives them): the raw dump IDs of the
    reasons in SAMPLED_REJECTIONS. ``path``: the chunk's dump file (None: the lines of several
    files, each then found by its file and number). None when there are none."""
    if k <= 0 or rejected is None or rejected.num_rows == 0:
        return None
    reasons = plain_array(rejected["reason"], text="cast")
    keep = pc.is_in(reasons, value_set=pa.array([str(r) for r in SAMPLED_REJECTIONS]))
    if not pc.any(keep).as_py():
        return None
    lines = pc.filter(plain_array(rejected["line"]), keep)
    if path is None:
        mine = pa.array(_line_places(parsed["source_file"], parsed["line"], pc.filter(rejected["source_file"], keep), lines))
        places = place_hashes(pc.filter(parsed["source_file"], mine), pc.filter(plain_array(parsed["line"]), mine))
    else:
        mine = pc.is_in(plain_array(parsed["line"]), value_set=lines)
        places = place_hashes(path, pc.filter(plain_array(parsed["line"]), mine))
    ids = pc.filter(plain_array(parsed["id"]), mine)
    return candidates(pc.fill_null(ids, ""), pc.filter(reasons, keep), k, places)


def _line_places(files, lines, of_files, of_lines) -> np.ndarray:
    """Which of the lines (``files``, ``lines``: each line's dump path and number) are among the
    lines ``of_files``, ``of_lines``: by the whole path, exactly. A place hash names a file by its
    name alone (the sample's draw): two files of one name in two folders, keyed together, took each
    other's line numbers."""
    lines, of_lines = plain_array(lines), plain_array(of_lines)
    mine = pc.is_in(lines, value_set=of_lines).to_numpy(zero_copy_only=False)  # by number first: few rows left
    rows = np.flatnonzero(mine)
    files = plain_array(files.take(pa.array(rows)), text="cast")  # (a dictionary's rows taken, then decoded)
    of_files = plain_array(of_files, text="cast")
    codes = pc.dictionary_encode(pa.concat_arrays([files, of_files])).indices.to_numpy(zero_copy_only=False)
    codes = codes.astype(np.int64) << 32  # line numbers are under 2**31 (dumps.MAX_LINES)
    at = codes[:len(rows)] | lines.take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.int64)
    of = codes[len(rows):] | of_lines.to_numpy(zero_copy_only=False).astype(np.int64)
    mine[rows] = np.isin(at, of)
    return mine


class SampleLines(beam.CombineFn):
    """Per data source: ``(k, candidates)`` in, the sample out (the ``k`` lines of smallest
    ``(hash, value, reason)`` of all candidates, sorted: the rows' positions are their names). The accumulator is compacted whenever it
    holds more than twice ``k`` rows, so memory stays bounded by the sample size."""

    def create_accumulator(self):
        return 0, []

    def add_input(self, acc, element):
        k, tables = acc
        size, table = element
        return self._compact(max(k, size), tables + [table])

    def merge_accumulators(self, accs):
        accs = list(accs)
        return self._compact(max(k for k, _ in accs), [t for _, tables in accs for t in tables])

    def extract_output(self, acc):
        k, tables = acc
        return bottom_k(pa.concat_tables(tables), k, ordered=True) if tables else SAMPLE_SCHEMA.empty_table()

    @staticmethod
    def _compact(k: int, tables: list[pa.Table]):
        return k, compact(k, tables)


def compact(k: int, tables: list[pa.Table]) -> list[pa.Table]:
    """Candidate tables, reduced to their bottom ``k`` once they hold more than twice ``k`` rows:
    the same sample in the end (see the module docstring), memory bounded by the sample size."""
    if sum(t.num_rows for t in tables) > 2 * k:
        return [bottom_k(pa.concat_tables(tables), k)]
    return tables
