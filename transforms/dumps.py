"""Segment dumps: the platform's outbound batch files, read into Arrow tables.

A dump line is ``<ID><SEP><SEG1,SEG2,...><SEP><REMOVED1,...>`` (separators and column roles are
configurable per data source). Reading is vectorized: a file is decompressed in large chunks, split
into lines with numpy, parsed with Arrow compute kernels, and every line ends either in the parsed
table or in the rejected table with its file, line number and a reason, never its content.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import NAME, constant, names
from transforms.config import DataSourceConfig
from transforms.dump_files import CHUNK_BYTES, FileStats, bare_cr, line_chunks, nul_block, nul_bytes
from transforms.reasons import Reason

PARSED_SCHEMA = pa.schema(
    [
        ("data_source", NAME),
        ("source_file", NAME),
        ("line", pa.int64()),
        ("id", pa.string()),
        ("segments", pa.list_(pa.string())),
        ("removed", pa.list_(pa.string())),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
    ]
)

MAX_LINES = 2**31 - 1  # line numbers travel as int32
def split_lines(chunk: bytes) -> pa.Array:
    """The lines of ``chunk`` (without their line breaks) as a binary array, one entry per line."""
    return _split(chunk)[0]


def _split(chunk: bytes) -> tuple[pa.Array, bytes, np.ndarray]:
    """:func:`split_lines`, with the lines' bytes end to end and their offsets."""
    if not chunk:
        return pa.array([], pa.binary()), b"", np.zeros(1, np.int32)
    buf = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(ends) == 0 or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))  # last line without a final newline
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    lengths = ends - starts  # excludes the '\n'
    # Drop a '\r' before the '\n' (CRLF files), and at the end of a last line without one.
    has_cr = (lengths > 0) & (buf[np.maximum(ends - 1, 0)] == 13)
    lengths = lengths - has_cr
    # The lines' bytes end to end: the line breaks removed by bytes.replace (a memchr pass, ~40%
    # less than a boolean mask over the chunk; fuzzed in tests/test_dumps.py). A CR ending a last
    # line without LF stays in the buffer, past the last offset: no value holds it.
    data = (chunk.replace(b"\r\n", b"\n") if has_cr.any() else chunk).replace(b"\n", b"")
    new_offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(new_offsets), pa.py_buffer(data)]), \
        data, new_offsets


def check_lines(path: str, data: bytes, offsets: np.ndarray, first_line: int) -> None:
    """Fail the file, naming the line, when its lines (``data``, split at ``offsets``, from line
    ``first_line``) hold a CR (CRLF's are gone: any left is a line break without LF) or a NUL
    block (:func:`~transforms.dump_files.nul_block`). :func:`~transforms.dump_files.check_text_start`
    samples a file's start; this checks every line, in the parallel part of the stage (memchr
    passes over bytes already built)."""
    end = int(offsets[-1])

    def line(at: int) -> int:
        return first_line + int(np.searchsorted(offsets, at, side="right")) - 1

    at = data.find(b"\r", 0, end)
    if at >= 0:
        raise bare_cr(path, line(at))
    at = nul_block(data, end)
    if at >= 0:
        raise nul_bytes(path, line(at))


def decode_lines(lines: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Decode binary lines as UTF-8; returns (strings with null for bad lines, mask of bad lines)."""
    try:
        return lines.cast(pa.string()), np.zeros(len(lines), dtype=bool)
    except pa.ArrowInvalid:
        pass
    decoded, bad = [], np.zeros(len(lines), dtype=bool)
    for i, value in enumerate(lines.to_pylist()):  # rare path: only for chunks with a bad byte
        try:
            decoded.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            decoded.append(None)
            bad[i] = True
    return pa.array(decoded, pa.string()), bad


def split_tokens(values: pa.Array, sep: str) -> tuple[pa.ListArray, pa.Array, np.ndarray, np.ndarray]:
    """Split strings on ``sep`` into lists without empty tokens. Returns (lists, every token, the
    row of each token, which tokens are non-empty): the last three for per-token checks."""
    parts = pc.split_pattern(values, pattern=sep)
    flat = pc.list_flatten(parts)
    parents = pc.list_parent_indices(parts).to_numpy()
    non_empty = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)  # (bytes: no decoding)
    counts = np.bincount(parents[non_empty], minlength=len(values))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    kept = flat.filter(pa.array(non_empty)).cast(pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), kept), flat, parents, non_empty


MAX_SEGMENT_DIGITS = 19


def _split_list(values: pa.Array, sep: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Split strings on ``sep`` into lists without empty tokens.

    Returns (lists, has_trait, has_bad_id) where the masks flag rows with a key-value/trait token
    (``=`` or ``"``) or a token that is not a numeric segment id.
    """
    n = len(values)
    lists, flat, parents, non_empty = split_tokens(values, sep)
    is_trait = (
        pc.or_(pc.match_substring(flat, "="), pc.match_substring(flat, '"')).to_numpy(zero_copy_only=False) & non_empty
    )
    # ^[0-9]+$ per token: Arrow's ASCII-decimal test is the same rule at a tenth of the regex's cost
    # (0.17 -> 0.02 s for the 2.8M tokens of 1M bench lines; Unicode digits are not numbers: tested).
    # At most 19 digits (the platform's segment ids are 64-bit numbers): a longer run of digits is
    # two lines run together (a dump without its final line break joined to the next, as ``cat
    # a.gz b.gz`` does), the next line's 38-digit visitor ID ending the segment id.
    # (the number's digits: zeros in front do not count, '000042' is segment 42, see _without_leading_zeros)
    zeros = pc.any(pc.starts_with(flat, "0")).as_py()
    digits = pc.utf8_ltrim(flat, characters="0") if zeros else flat
    is_bad = (~pc.ascii_is_decimal(flat).to_numpy(zero_copy_only=False)
              | pc.greater(pc.binary_length(digits), MAX_SEGMENT_DIGITS).to_numpy(zero_copy_only=False))
    is_bad &= non_empty & ~is_trait
    has_trait = np.bincount(parents[is_trait], minlength=n) > 0
    has_bad = np.bincount(parents[is_bad], minlength=n) > 0
    return (_without_leading_zeros(lists, digits, non_empty) if zeros else lists), has_trait, has_bad


def _without_leading_zeros(lists: pa.ListArray, digits: pa.Array, non_empty: np.ndarray) -> pa.ListArray:
    """Segment ids as their number's digits: '0100' is segment 100 (and '00' segment 0), as the
    platform's 64-bit ids are; written both ways in a delivery, they made two audiences of one
    segment. ``digits``: every token with its zeros in front trimmed, of which the lists hold the
    ``non_empty`` ones. Only rows whose tokens are all digits are kept, so trimming the others changes
    nothing."""
    trimmed = digits.filter(pa.array(non_empty)).cast(pa.string())
    trimmed = pc.if_else(pc.equal(pc.binary_length(trimmed), 0), "0", trimmed)
    return pa.ListArray.from_arrays(lists.offsets, trimmed)


def parse_lines(
    lines: pa.Array, first_line: int | np.ndarray, source_file: str | pa.DictionaryArray, ds: DataSourceConfig,
    keep_removals: bool = False,
) -> tuple[pa.Table, pa.Table]:
    """Parse binary lines numbered from ``first_line``, of the dump ``source_file``; returns (parsed,
    rejected) tables. Lines of several files: each line's number and file (``NAME``) as arrays."""
    if isinstance(first_line, np.ndarray):
        line_no = first_line
    else:
        line_no = np.arange(first_line, first_line + len(lines), dtype=np.int64)
    parts, nparts, reason = _split_fields(lines, ds)
    ok = np.flatnonzero(reason == None)  # noqa: E711 - numpy elementwise
    column = _field_getter(parts, nparts, ok, list(ds.columns))
    ids = column("id")
    segment_text, removed_text = column("segments"), column("removed")
    segments, seg_trait, seg_bad = _split_list(segment_text, ds.segment_separator)
    removed, rem_trait, rem_bad = _split_list(removed_text, ds.segment_separator)
    sub_reason = _segment_reasons(segments, removed, seg_trait | rem_trait, seg_bad | rem_bad, keep_removals)
    sub_reason[_dangling_list(segment_text, removed_text, list(ds.columns), ds.segment_separator)] = Reason.MALFORMED_LINE
    reason[ok] = sub_reason

    good = sub_reason == None  # noqa: E711
    good_arr, n_good = pa.array(good), int(good.sum())
    parsed = pa.table(
        {
            "data_source": constant(ds.name, n_good),
            "source_file": constant(source_file, n_good) if isinstance(source_file, str)
            else source_file.take(pa.array(ok[good])),
            "line": pa.array(line_no[ok][good]),
            "id": ids.filter(good_arr),
            "segments": segments.filter(good_arr),
            "removed": removed.filter(good_arr),
        },
        schema=PARSED_SCHEMA,
    )
    return parsed, rejected_table(ds.name, source_file, line_no, reason)


def _split_fields(lines: pa.Array, ds: DataSourceConfig) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
    """Lines split on the field separator: (fields, fields per line, reason per line: not_utf8,
    empty_line, malformed_line or None)."""
    reason = np.full(len(lines), None, dtype=object)
    text, not_utf8 = decode_lines(lines)
    reason[not_utf8] = Reason.NOT_UTF8
    text = pc.fill_null(text, "")
    empty = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    reason[empty & ~not_utf8] = Reason.EMPTY_LINE
    parts = pc.split_pattern(text, pattern=ds.field_separator)
    nparts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    well_formed = nparts == len(ds.columns)
    if ds.columns[-1] == "removed":  # the trailing removed column is optional
        well_formed |= nparts == len(ds.columns) - 1
    reason[~well_formed & (reason == None)] = Reason.MALFORMED_LINE  # noqa: E711
    return parts, nparts, reason


def _dangling_list(segments: pa.Array, removed: pa.Array, roles: list[str], sep: str) -> np.ndarray:
    """Lines whose first list (in column order) ends with the segment separator before the other,
    not empty: '<ID> 100, 200' (a space after a comma) read as segments '100,' and removed '200',
    exit 0. The platform writes no such line; a trailing separator alone is read."""
    if "segments" not in roles or "removed" not in roles or not len(segments):
        return np.zeros(len(segments), dtype=bool)
    first, second = (segments, removed) if roles.index("segments") < roles.index("removed") else (removed, segments)
    dangling = pc.and_(pc.ends_with(first, sep), pc.greater(pc.binary_length(second), 0))
    return pc.fill_null(dangling, False).to_numpy(zero_copy_only=False)


def _field_getter(parts: pa.ListArray, nparts: np.ndarray, ok: np.ndarray, roles: list[str]):
    """A function role -> that field of the lines ``ok``. A field is gathered straight from the
    split's flat values (string takes are cheap; taking the list array itself, or re-splitting, is
    not). A line without the optional trailing removed column reads it as ""."""
    offsets = parts.offsets.to_numpy()
    flat = parts.values
    first_part = offsets[:-1][ok] - offsets[0]

    def column(role: str) -> pa.Array:
        if role not in roles or len(ok) == 0:
            return pa.repeat(pa.scalar("", pa.string()), len(ok))
        index = roles.index(role)
        present = nparts[ok] > index
        values = flat.take(pa.array(np.where(present, first_part + index, 0)))
        return values if present.all() else pc.if_else(pa.array(present), values, "")

    return column


def _segment_reasons(segments: pa.ListArray, removed: pa.ListArray, trait: np.ndarray, bad: np.ndarray,
                     keep_removals: bool) -> np.ndarray:
    """Why a well-formed line gives nothing to add (None: it does): no segments, an invalid
    segment id, a trait, or (unless ``keep_removals``) only removals."""
    n_seg = pc.list_value_length(segments).to_numpy(zero_copy_only=False)
    n_rem = pc.list_value_length(removed).to_numpy(zero_copy_only=False)
    reason = np.full(len(n_seg), None, dtype=object)
    reason[(n_seg == 0) & (n_rem == 0)] = Reason.NO_SEGMENTS
    reason[bad] = Reason.INVALID_SEGMENT_ID
    reason[trait] = Reason.TRAIT_NOT_IMPORTABLE
    if not keep_removals:
        reason[(n_seg == 0) & (n_rem > 0) & (reason == None)] = Reason.REMOVALS_ONLY  # noqa: E711
    return reason


def rejected_table(data_source: str, source_file: str | pa.Array, line_no: np.ndarray | pa.Array, reason: np.ndarray | pa.Array) -> pa.Table:
    """Rows for the lines whose ``reason`` is set (null/None reasons are skipped).

    Names are dictionary-encoded (``NAME``); the written file has REJECTED_SCHEMA's plain strings."""
    reason = pa.array(reason, pa.string()) if not isinstance(reason, (pa.Array, pa.ChunkedArray)) else reason
    mask = pc.is_valid(reason)
    count = pc.sum(mask).as_py() or 0
    files = constant(source_file, count) if isinstance(source_file, str) else names(pc.filter(source_file, mask))
    lines = pa.array(line_no, pa.int64()) if isinstance(line_no, np.ndarray) else line_no
    return pa.table(
        {
            "data_source": constant(data_source, count),
            "source_file": files,
            "line": pc.filter(lines, mask),
            "reason": names(pc.filter(reason, mask)),
        }
    )


def numbered_chunks(path: str, chunk_bytes: int | None = None, stats: FileStats | None = None) -> Iterator[tuple[bytes, int]]:
    """``(chunk, number of its first line)`` for the chunks of a dump (``CHUNK_BYTES`` each unless
    told; :func:`~transforms.dump_files.line_chunks`), at most ``MAX_LINES`` lines; ``stats`` gets
    the file's line count, stored size and md5 once the file is read to its end."""
    return line_chunks(path, chunk_bytes or CHUNK_BYTES, stats, max_lines=MAX_LINES)


def parse_chunk(chunk: bytes, first_line: int, path: str, ds: DataSourceConfig,
                keep_removals: bool = False) -> tuple[pa.Table, pa.Table, int]:
    """``(parsed, rejected, lines in the chunk)`` for one chunk of a dump (see :func:`parse_lines`);
    a chunk whose lines cannot be read as lines fails its file (:func:`check_lines`)."""
    lines, data, offsets = _split(chunk)
    check_lines(path, data, offsets, first_line)
    parsed, rejected = parse_lines(lines, first_line, path, ds, keep_removals)
    return parsed, rejected, len(lines)


def parse_chunks(jobs: list[tuple[bytes, int, str]], ds: DataSourceConfig,
                 keep_removals: bool = False) -> tuple[pa.Table, pa.Table, int]:
    """:func:`parse_chunk` for chunks of several files at once (``(chunk, first line, path)`` each):
    one pass of the parsing kernels for them all, each line numbered in its own file. A batch split
    in hundreds of files of a few thousand lines paid those kernels' fixed cost once a file."""
    pieces = []
    for chunk, first_line, path in jobs:
        lines, data, offsets = _split(chunk)
        check_lines(path, data, offsets, first_line)
        pieces.append(lines)
    counts = [len(lines) for lines in pieces]
    line_no = np.concatenate([np.zeros(0, np.int64)] + [np.arange(first, first + n, dtype=np.int64)
                                                        for (_, first, _), n in zip(jobs, counts)])
    files = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(jobs), dtype=np.int32), counts)),
                                           pa.array([path for _, _, path in jobs], pa.string()))
    lines = pa.concat_arrays(pieces) if pieces else pa.array([], pa.binary())
    parsed, rejected = parse_lines(lines, line_no, files, ds, keep_removals)
    return parsed, rejected, len(lines)


def read_dump(path: str, ds: DataSourceConfig, chunk_bytes: int = CHUNK_BYTES, stats: FileStats | None = None,
              keep_removals: bool = False) -> Iterator[tuple[pa.Table, pa.Table, int]]:
    """Yield ``(parsed, rejected, lines_read)`` for each chunk of one dump file; ``stats`` gets the
    file's line count, stored size and md5. ``keep_removals``: lines that only remove segments are
    parsed rows (an incremental sync applies them), not ``removals_only`` rejections."""
    for chunk, first_line in numbered_chunks(path, chunk_bytes, stats):
        yield parse_chunk(chunk, first_line, path, ds, keep_removals)
