"""An extract's column names (and which read as text) from its header, footer or first record,
before its rows are read: the start-up check's view of a file (:mod:`transforms.preflight`), the
diagnosis' columns (:mod:`transforms.diagnosis_forms`) and the reader's check of each file's columns
(:mod:`transforms.profiles`). A file that is not what its name or ``profiles.format`` says (empty, cut
short, compressed, UTF-16, Parquet read as text) fails here naming it and what it holds.
"""
from __future__ import annotations

import codecs
import csv
import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transforms.errors import InputError
from transforms.storage import not_parquet, not_text, open_input

HEADER_BYTES = 1 << 20  # read_schema_names: the most of a file taken for its header line


def read_schema_names(path: str, fmt: str, then=None, pattern: str | None = None, what: str = "extract") -> list[str]:
    """Column names of an extract, reading only its header/footer/first record; ``then(names, handle)``
    (JSONL): called with the file still open after its first record, to read on in the same pass (on
    gs:// an open fetches up to 16 MiB). ``pattern``: the path or glob that listed it; ``what``: the
    file, in a message ('targets file')."""
    with open_input(path, fmt) as handle:
        if fmt == "parquet":
            return list(_parquet_schema(handle, path, pattern, what).names)
        # "utf-8-sig": a byte order mark (Excel's "CSV UTF-8") is not part of the first name;
        # Arrow's readers skip it too. A CSV header: at most HEADER_BYTES (a file with CR-only line
        # breaks, an old Mac export, holds no LF: its "first line" would be the whole file).
        raw, number = (handle.readline(HEADER_BYTES), 1) if fmt == "csv" else first_jsonl_record(handle)
        # A compressed file that lost its extension, UTF-16: its names read as UTF-8 are no column's
        # (a bare '_csv.Error', or 'column ... is not in the extract', the column there).
        problem = not_text(path, raw, what, pattern)
        if problem and raw.startswith(b"PAR1") and what == "extract" and path.lower().endswith(".parquet"):
            # Named as it should be: the format setting is what reads it as text ('name the file .parquet' misled).
            problem = f"Parquet content, read as {fmt} by profiles.format: set it to parquet, or leave it out"
        if problem:
            raise InputError(path, problem)
        first = raw.decode("utf-8-sig", errors="replace")
        if not first:
            raise InputError(path, "empty file")
        if fmt == "csv":  # as written: the reader matches names exactly ('email ' is not 'email')
            # Its first record up to a CR, LF or CRLF, as Arrow's reader splits lines.
            return next(csv.reader(io.StringIO(first, newline="")), [])
        try:
            names = list(json.loads(first).keys())
        except (ValueError, AttributeError):
            raise InputError(path, "not valid JSON", line=number) from None
        if then:
            then(names, handle)
        return names


def text_columns(path: str, fmt: str) -> list[str]:
    """Column names of an extract whose values read as text whatever they hold: scalars (not lists or
    structs) that are not bytes (a Parquet binary column may hold anything, not UTF-8) and that Arrow
    casts to text. Reads only the extract's header/footer/first record."""
    with open_input(path, fmt) as handle:
        if fmt == "parquet":
            return [f.name for f in _parquet_schema(handle, path) if _reads_as_text(f.type)]
        if fmt == "csv":  # Arrow's own reading of the header (a BOM, quoted names), as the reader will see it.
            # Only the names are wanted: a bad row of the first block is skipped here (the reader
            # names its line), where Arrow's message would quote the row's values.
            try:
                skip = pacsv.ParseOptions(invalid_row_handler=lambda row: "skip")
                return pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
                                      parse_options=skip).schema.names
            except pa.ArrowInvalid:
                raise InputError(path, "cannot read the csv extract's header (ArrowInvalid)") from None
        raw, number = first_jsonl_record(handle)
        first = raw.decode("utf-8-sig", errors="replace")  # not UTF-8: the reader names its rows
    try:
        return [k for k, v in json.loads(first).items() if not isinstance(v, (list, dict))]
    except (ValueError, AttributeError):
        raise InputError(path, "not valid JSON", line=number) from None


def _parquet_schema(handle, path: str, pattern: str | None = None, what: str = "extract") -> pa.Schema:
    """A Parquet file's schema, from its footer; a file that is empty or has no footer (cut short,
    compressed, text) fails naming it and, where its first bytes tell, what it holds
    (:func:`~transforms.storage.not_parquet`; Arrow's message names no file). Read before its rows by
    the preflight and by the import's keying (the diagnosis' columns): a file may be damaged or
    arrive between the two. ``pattern``: the path or glob that listed it; ``what``: the file ('targets
    file': not told of the extract's format setting)."""
    try:
        return pq.ParquetFile(handle).schema_arrow
    except pa.ArrowInvalid as exc:
        if "size is 0 bytes" in str(exc):
            raise InputError(path, "empty file") from None
        try:
            handle.seek(0)
            problem = not_parquet(path, handle.read(4096), pattern, "profiles.format" if what == "extract" else None)
        except (OSError, ValueError):  # only what it holds is unknown: the file is named all the same
            problem = None
        raise InputError(path, problem or "cannot read the parquet extract") from None


def first_jsonl_record(handle) -> tuple[bytes, int]:
    """A JSONL file's first record as read (its raw line) and that line's number, from 1: blank lines
    are no records (Arrow's reader skips them, a byte order mark before one too). ``(b"", 0)``: none."""
    for number, raw in enumerate(iter(handle.readline, b""), start=1):
        if (raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw).strip():
            return raw, number
    return b"", 0


def _reads_as_text(t: pa.DataType) -> bool:
    value = t.value_type if pa.types.is_dictionary(t) else t
    if pa.types.is_nested(value) or any(is_(value) for is_ in (pa.types.is_binary, pa.types.is_large_binary,
                                                               pa.types.is_fixed_size_binary, pa.types.is_binary_view)):
        return False
    try:
        pa.nulls(0, t).cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # an interval, say
        return False
    return True
