"""Profile extracts (CSV, Parquet or JSONL) read into Arrow tables with standard column names.

Output columns: ``profile_id`` (string), ``visitor_ids`` (list<string>, raw entries: may be null or
blank, validated by their consumers), ``opt_out`` (bool), and one
``k:<column>`` string column per extract column that a data source reconciles on.
"""
from __future__ import annotations

import json
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from transforms.arrow_utils import plain_array
from transforms.config import JobConfig
from transforms.csv_reader import csv_tables
from transforms.errors import InputError

BATCH_ROWS = 1 << 20
KEY_PREFIX = "k:"


def needed_columns(cfg: JobConfig, extra: Sequence[str] = ()) -> list[str]:
    """Extract columns the job reads: id, visitor ids, opt-out and every ``match_on`` column (and
    ``extra`` ones: the columns the mismatch diagnosis looks at)."""
    p = cfg.profiles
    cols = [p.id]
    if any(ds.id_type == "visitor" for ds in cfg.data_sources) and p.visitor_ids:
        cols.append(p.visitor_ids)
    if p.opt_out:
        cols.append(p.opt_out)
    for ds in cfg.data_sources:
        if ds.match_on:
            col = p.column_for(ds.match_on)
            if col not in cols:
                cols.append(col)
    return cols + [c for c in extra if c not in cols]


def key_columns(cfg: JobConfig) -> list[str]:
    return sorted({cfg.profiles.column_for(ds.match_on) for ds in cfg.data_sources if ds.match_on})


def _visitor_lists(values: pa.Array | pa.ChunkedArray | None, n: int, sep: str) -> pa.Array:
    """The visitor-ID column as list<string> (CSV: split on ``sep``). Entries are not cleaned here:
    consumers validate each ID (38 digits) when they use it."""
    if values is None:
        return pa.nulls(n, pa.list_(pa.string()))
    values = plain_array(values)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values if values.type == pa.list_(pa.string()) else values.cast(pa.list_(pa.string()))
    return pc.split_pattern(plain_array(values, text="cast"), pattern=sep)


def standardize(table: pa.Table, cfg: JobConfig, path: str, extra: Sequence[str] = ()) -> pa.Table:
    """Map an extract's columns to the standard profile table; ``extra`` columns of the extract
    become ``k:`` columns too, where present and not nested (lists, structs)."""
    p = cfg.profiles
    n = table.num_rows
    ids = plain_array(table[p.id], text="cast")
    missing_ids = pc.sum(pc.or_(pc.is_null(ids), pc.equal(pc.utf8_length(pc.fill_null(ids, "")), 0))).as_py()
    if missing_ids:
        raise InputError(path, f"{missing_ids} profile(s) have an empty '{p.id}'")
    cols = {"profile_id": ids}
    has_visitors = p.visitor_ids and p.visitor_ids in table.column_names
    cols["visitor_ids"] = _visitor_lists(table[p.visitor_ids] if has_visitors else None, n, p.visitor_ids_separator)
    if p.opt_out and p.opt_out in table.column_names:
        opt = table[p.opt_out]
        opt = opt.combine_chunks() if isinstance(opt, pa.ChunkedArray) else opt
        if not pa.types.is_boolean(opt.type):
            text = pc.utf8_lower(pc.utf8_trim_whitespace(plain_array(opt, text="cast")))
            opt = pc.is_in(text, value_set=pa.array(["true", "1", "yes", "y", "t"]))
        cols["opt_out"] = pc.fill_null(opt, False)
    else:
        cols["opt_out"] = pa.repeat(pa.scalar(False), n)
    for col in key_columns(cfg):
        cols[KEY_PREFIX + col] = plain_array(table[col], text="cast")
    for col in extra:
        if KEY_PREFIX + col not in cols and col in table.column_names and not pa.types.is_nested(table[col].type):
            cols[KEY_PREFIX + col] = plain_array(table[col], text="cast")
    return pa.table(cols)


def read_profiles(path: str, cfg: JobConfig, batch_rows: int | None = None, extra: Sequence[str] = ()) -> Iterator[pa.Table]:
    """Yield standardized profile tables from one extract file (local or gs://), in batches of
    ``BATCH_ROWS`` rows unless told; ``extra``: more extract columns to carry (see standardize)."""
    batch_rows = batch_rows or BATCH_ROWS
    from apache_beam.io.filesystems import FileSystems

    columns = needed_columns(cfg, extra)
    fmt = cfg.profiles.resolved_format
    try:
        with FileSystems.open(path) as handle:
            if fmt == "parquet":
                pf = pq.ParquetFile(handle)
                present = [c for c in columns if c in pf.schema_arrow.names]
                for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
                    yield standardize(pa.Table.from_batches([batch]), cfg, path, extra)
            elif fmt == "csv":
                for table in csv_tables(handle, path, columns, strings_can_be_null=True):
                    yield standardize(table, cfg, path, extra)
            else:
                yield from _read_jsonl(handle, path, columns, cfg, extra)
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        # Arrow's messages can quote the offending row: keep only the kind of problem.
        raise InputError(path, f"cannot read the {fmt} extract ({type(exc).__name__})") from None


def _read_jsonl(handle, path: str, columns: list[str], cfg: JobConfig, extra: Sequence[str] = ()) -> Iterator[pa.Table]:
    data = handle.read()
    # Find the first bad line ourselves so the error can name it (Arrow's message quotes content).
    try:
        table = pajson.read_json(pa.BufferReader(data))
    except pa.ArrowInvalid:
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                try:
                    json.loads(raw)
                except ValueError:
                    raise InputError(path, "not valid JSON", line=number) from None
        raise InputError(path, "inconsistent JSON records") from None
    table = table.select([c for c in columns if c in table.column_names])
    for start in range(0, max(table.num_rows, 1), BATCH_ROWS):
        piece = table.slice(start, BATCH_ROWS)
        if piece.num_rows:
            yield standardize(piece, cfg, path, extra)


def read_schema_names(path: str, fmt: str) -> list[str]:
    """Column names of an extract, reading only its header/footer/first record."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        if fmt == "parquet":
            return list(pq.ParquetFile(handle).schema_arrow.names)
        if fmt == "csv":
            first = handle.readline().decode("utf-8", errors="replace")
            return [c.strip().strip('"') for c in first.rstrip("\r\n").split(",")]
        first = handle.readline()
        try:
            return list(json.loads(first).keys())
        except (ValueError, AttributeError):
            raise InputError(path, "not valid JSON", line=1) from None


def scalar_columns(path: str, fmt: str) -> list[str]:
    """Column names of an extract whose values are scalars (not lists or structs), reading only its
    header/footer/first record."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        if fmt == "parquet":
            return [f.name for f in pq.ParquetFile(handle).schema_arrow if not pa.types.is_nested(f.type)]
        if fmt == "csv":  # Arrow's own reading of the header (a BOM, quoted names), as the reader will see it
            return pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False)).schema.names
        first = handle.readline()
    try:
        return [k for k, v in json.loads(first).items() if not isinstance(v, (list, dict))]
    except (ValueError, AttributeError):
        raise InputError(path, "not valid JSON", line=1) from None
