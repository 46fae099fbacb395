"""Profile extracts (CSV, Parquet or JSONL) read into Arrow tables with standard column names.

Output columns: ``profile_id`` (string), ``visitor_ids`` (list<string>, raw entries: may be null or
blank, validated by their consumers), ``opt_out`` (bool), and one
``k:<column>`` string column per extract column that a data source reconciles on.
"""
from __future__ import annotations

import codecs
import csv
import json
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from transforms.arrow_utils import plain_array
from transforms.config import JobConfig
from transforms.csv_reader import csv_tables
from transforms.errors import InputError

BATCH_ROWS = 1 << 20
KEY_PREFIX = "k:"


def needed_columns(cfg: JobConfig) -> list[str]:
    """Extract columns the job reads: id, visitor ids, opt-out and every ``match_on`` column."""
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
    return cols


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


def standardize(table: pa.Table, cfg: JobConfig, path: str) -> pa.Table:
    """Map an extract's columns to the standard profile table."""
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
    return pa.table(cols)


def column_field(cfg: JobConfig, column: str) -> str:
    """The config field that asks for an extract column (for messages)."""
    for i, ds in enumerate(cfg.data_sources):
        if ds.match_on and cfg.profiles.column_for(ds.match_on) == column:
            return f"data_sources[{i}].match_on"
    for field in ("id", "opt_out", "visitor_ids"):
        if getattr(cfg.profiles, field) == column:
            return f"profiles.{field}"
    return "profiles"


def required_columns(cfg: JobConfig) -> list[str]:
    """The needed columns every file of the extract must have (visitor IDs may be absent)."""
    return [c for c in needed_columns(cfg) if c != cfg.profiles.visitor_ids]


def _present(path: str, names: list[str], cfg: JobConfig) -> list[str]:
    """The needed columns among ``names``; a required one missing fails naming the file, the column
    and the config field (a file of a glob that arrived after the preflight check)."""
    for col in required_columns(cfg):
        if col not in names:
            raise InputError(path, f"no column '{col}' ({column_field(cfg, col)})")
    return [c for c in needed_columns(cfg) if c in names]


def read_profiles(path: str, cfg: JobConfig, batch_rows: int | None = None) -> Iterator[pa.Table]:
    """Yield standardized profile tables from one extract file (local or gs://), in batches of
    ``BATCH_ROWS`` rows unless told."""
    batch_rows = batch_rows or BATCH_ROWS
    from apache_beam.io.filesystems import FileSystems

    columns = needed_columns(cfg)
    fmt = cfg.profiles.resolved_format
    try:
        with FileSystems.open(path) as handle:
            if fmt == "parquet":
                pf = pq.ParquetFile(handle)
                present = _present(path, pf.schema_arrow.names, cfg)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
                    yield standardize(pa.Table.from_batches([batch]), cfg, path)
            elif fmt == "csv":
                present = _present(path, read_schema_names(path, fmt), cfg)
                for table in csv_tables(handle, path, present, strings_can_be_null=True):
                    yield standardize(table, cfg, path)
            else:
                yield from _read_jsonl(handle, path, columns, cfg)
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        # Arrow's messages can quote the offending row: keep only the kind of problem.
        raise InputError(path, f"cannot read the {fmt} extract ({type(exc).__name__})") from None


def _read_jsonl(handle, path: str, columns: list[str], cfg: JobConfig) -> Iterator[pa.Table]:
    data = handle.read()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data  # Arrow skips it; json.loads not
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
    table = table.select(_present(path, table.column_names, cfg)) if table.num_rows else table
    for start in range(0, max(table.num_rows, 1), BATCH_ROWS):
        piece = table.slice(start, BATCH_ROWS)
        if piece.num_rows:
            yield standardize(piece, cfg, path)


def read_schema_names(path: str, fmt: str) -> list[str]:
    """Column names of an extract, reading only its header/footer/first record."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        if fmt == "parquet":
            return list(pq.ParquetFile(handle).schema_arrow.names)
        # "utf-8-sig": a byte order mark (Excel's "CSV UTF-8") is not part of the first name;
        # Arrow's readers skip it too.
        first = handle.readline().decode("utf-8-sig", errors="replace")
        if fmt == "csv":
            return [c.strip() for c in next(csv.reader([first.rstrip("\r\n")]), [])]
        try:
            return list(json.loads(first).keys())
        except (ValueError, AttributeError):
            raise InputError(path, "not valid JSON", line=1) from None
