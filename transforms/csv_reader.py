"""One reader for the CSV inputs with a header (profile extracts, an export's target lists).

Only the asked columns are read, every one as strings, in blocks of 16 MB. A leading UTF-8 BOM is
skipped (Arrow's reader does it). A row with the wrong number of columns stops the reading: the
tables before it are yielded, then :class:`InputError` names the first bad row's line (never its
content).
"""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from transforms.errors import InputError

BLOCK_BYTES = 16 << 20


def csv_tables(handle, path: str, columns: list[str], strings_can_be_null: bool) -> Iterator[pa.Table]:
    """Open ``handle`` (a CSV file with a header) and return an iterator over its tables.

    The header is read now: a missing column (``pa.ArrowKeyError``, a ``KeyError``) or an empty file
    (``pa.ArrowInvalid``) raises here, before any table, so callers can tell a bad header from a
    failure later in the file.
    ``strings_can_be_null``: Arrow's flag (empty and ``NULL``/``NA``-like values read as null)."""
    bad_rows: list[int | None] = []

    def on_invalid(row) -> str:
        bad_rows.append(row.number)
        return "skip"

    reader = pacsv.open_csv(
        handle,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=strings_can_be_null,
        ),
    )
    return _until_bad_row(reader, bad_rows, path)


def _until_bad_row(reader, bad_rows: list, path: str) -> Iterator[pa.Table]:
    for batch in reader:
        if bad_rows:
            break
        yield pa.Table.from_batches([batch])
    if bad_rows:
        raise InputError(path, "wrong number of columns", line=bad_rows[0])
