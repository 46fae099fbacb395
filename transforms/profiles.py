"""Profile extracts (CSV, Parquet or JSONL) read into Arrow tables with standard column names.

Output columns: ``profile_id`` (string), ``visitor_ids`` (list<string>, raw entries: may be null or
blank, validated by their consumers), ``opt_out`` (bool: true opted out, false consented, null
unknown; read for the export only, see :mod:`transforms.consent`), and one ``k:<column>`` string
column per extract column that a data source reconciles on.

The import does not read the opt-out column at all: it records who is in a segment and does not
apply consent, so a value the export would refuse never stops an import. The export reads it
(``export=True``) and an unreadable value fails the run naming the file, the line (CSV, JSONL) or
row (Parquet) and the column, never the value.
"""
from __future__ import annotations

import codecs
import json
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from transforms.arrow_utils import plain_array
from transforms.config import JobConfig
from transforms.consent import BadOptOut, consent_of, parse_opt_out
from transforms.csv_reader import csv_tables
from transforms.errors import InputError, RowProblem
from transforms.extract_header import read_schema_names
from transforms.extract_lines import (DoubledKey, csv_line_of_row, first_json_type_change, first_line_not_utf8,
                                      jsonl_line_of_row, refuse_doubled_keys)
from transforms.match_columns import match_column_counts
from transforms.outcomes import Metric, count
from transforms.profile_columns import (address_text, distinct_ids_at_most, id_text, profile_id_text,
                                       visitor_entry_counts, visitor_lists)
from transforms.storage import open_input

BATCH_ROWS = 1 << 20
KEY_PREFIX = "k:"
AS_UTF8 = "(Latin-1?): save the extract as UTF-8"  # the end of a "not UTF-8" failure


def needed_columns(cfg: JobConfig, export: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """Extract columns the job reads: id, visitor ids, every ``match_on`` column, for the export the
    opt-out column (and ``extra`` ones: the columns the mismatch diagnosis looks at)."""
    p = cfg.profiles
    cols = [p.id]
    if any(ds.id_type == "visitor" for ds in cfg.data_sources) and p.visitor_ids:
        cols.append(p.visitor_ids)
    if export and p.consent_column:
        cols.append(p.consent_column)
    for col in key_columns(cfg, export):
        if col not in cols:
            cols.append(col)
    return cols + [c for c in extra if c not in cols]


def key_columns(cfg: JobConfig, export: bool = False) -> list[str]:
    """Columns read as text keys (``k:<column>``): every ``match_on`` column and, for the export, the
    email / phone columns the suppression lists are compared with."""
    cols = {cfg.profiles.column_for(ds.match_on) for ds in cfg.data_sources if ds.match_on}
    if export:
        cols |= {cfg.profiles.column_for(entry.kind) for entry in cfg.suppression}
    return sorted(cols)


def address_columns(cfg: JobConfig, export: bool = False) -> set[str]:
    """The key columns read only as email addresses or phones (by every data source matching on them, and
    the suppression lists): a normalizer reads no key from a number's text
    (:func:`~transforms.profile_columns.address_text`)."""
    kinds: dict[str, set] = {}
    for ds in cfg.data_sources:
        if ds.match_on:
            kinds.setdefault(cfg.profiles.column_for(ds.match_on), set()).add(ds.key_kind)
    for entry in cfg.suppression if export else ():
        kinds.setdefault(cfg.profiles.column_for(entry.kind), set()).add(entry.kind)
    return {column for column, read_as in kinds.items() if read_as <= {"email", "phone"}}


def _opt_out(table: pa.Table, cfg: JobConfig, path: str, export: bool) -> pa.Array:
    """The ``opt_out`` column as read (null: no value; :func:`consent_of` then reads it as the config
    says). Raises :class:`BadOptOut` on a value that is none of the spellings."""
    p = cfg.profiles
    if p.consent_column and p.consent_column in table.column_names:
        opt = parse_opt_out(table[p.consent_column])
        opt = pc.invert(opt) if p.opt_in else opt  # a consent column: true consented (null stays unknown)
    elif p.consent_column and export:
        # Never "nobody opted out": a renamed or dropped column fails, whatever opt_out_missing says.
        raise InputError(path, f"no {'consent' if p.opt_in else 'opt-out'} column '{p.consent_column}' in this extract")
    else:
        opt = pa.nulls(table.num_rows, pa.bool_())
    return opt


def standardize(table: pa.Table, cfg: JobConfig, path: str, export: bool = False, extra: Sequence[str] = (),
                counts: list | None = None) -> pa.Table:
    """Map an extract's columns to the standard profile table (see the module's docstring); ``extra``
    columns of the extract become ``k:`` columns too, where present and not nested (lists, structs).
    ``counts``: the visitor-ID entries' counts are added to it (:func:`visitor_entry_counts`), and the
    judged match columns' (:func:`~transforms.match_columns.match_column_counts`)."""
    p = cfg.profiles
    n = table.num_rows
    ids = profile_id_text(table[p.id], path, p.id)
    # Empty means no bytes: the byte lengths are the offsets' differences (utf8_length decodes every
    # character; it cost 1.9 ms a 256k batch against 0.4 ms). A float column's NaN (what pandas
    # writes for an integer id with gaps) would read as the id "nan": it is missing too.
    missing_ids = ids.null_count + (pc.sum(pc.equal(pc.binary_length(ids), 0)).as_py() or 0)
    floats = pa.types.is_floating(table.schema.field(p.id).type)
    if floats:
        missing_ids += pc.sum(pc.is_nan(table[p.id])).as_py() or 0
    if missing_ids:  # the first is located (the file's line or row): one among millions is found by it
        missing = pc.fill_null(pc.equal(pc.binary_length(ids), 0), True)
        if floats:
            missing = pc.or_(missing, pc.fill_null(pc.is_nan(table[p.id]), False))
        raise RowProblem(pc.index(missing, True).as_py(), f"{missing_ids} profile(s) have an empty '{p.id}'" + (
            " (a CSV cell reading NA, N/A, NULL, null, nan or NaN is empty too, as Arrow reads text)"
            if p.resolved_format == "csv" and ids.null_count else ""))
    cols = {"profile_id": ids}
    has_visitors = p.visitor_ids and p.visitor_ids in table.column_names
    cols["visitor_ids"] = visitor_lists(table[p.visitor_ids] if has_visitors else None, n, p.visitor_ids_separator,
                                         path, p.visitor_ids)
    if has_visitors and counts is not None:
        counts += visitor_entry_counts(cols["visitor_ids"], table[p.visitor_ids].type)
    opt_out = _opt_out(table, cfg, path, export)
    if counts is not None and export and p.consent_column and p.opt_out_missing == "consented":
        counts.append(count(Metric.CONSENTED_BY_DEFAULT_ROWS, opt_out.null_count))  # all of them: an emptied column
    cols["opt_out"] = consent_of(opt_out, p.opt_out_missing)
    addresses = address_columns(cfg, export)
    for col in key_columns(cfg, export):
        cols[KEY_PREFIX + col] = (address_text(table[col], path, col, counts) if col in addresses
                                  else _text(table, col, path))
    if counts is not None:
        counts += match_column_counts(cols, cfg, KEY_PREFIX)
    for col in extra:
        if KEY_PREFIX + col not in cols and col in table.column_names and not pa.types.is_nested(table[col].type):
            cols[KEY_PREFIX + col] = plain_array(table[col], text="cast")
    return pa.table(cols)


def _text(table: pa.Table, column: str, path: str) -> pa.Array:
    return id_text(table[column], path, column)


def column_field(cfg: JobConfig, column: str) -> str:
    """The config field that asks for an extract column (for messages)."""
    for i, ds in enumerate(cfg.data_sources):
        if ds.match_on and cfg.profiles.column_for(ds.match_on) == column:
            return f"data_sources[{i}].match_on"
    for field in ("id", "opt_out", "opt_in", "visitor_ids", "email", "phone"):
        if getattr(cfg.profiles, field) == column:
            return f"profiles.{field}"
    return "profiles"


def required_columns(cfg: JobConfig, export: bool = False) -> list[str]:
    """The needed columns every file of the extract must have (visitor IDs may be absent)."""
    return [c for c in needed_columns(cfg, export) if c != cfg.profiles.visitor_ids]


def _present(path: str, names: list[str], cfg: JobConfig, export: bool, extra: Sequence[str] = ()) -> list[str]:
    """The needed columns among ``names``; a required one missing fails naming the file, the column
    and the config field (a file of a glob that arrived after the preflight check)."""
    for col in required_columns(cfg, export):
        if col not in names:
            raise InputError(path, f"no column '{col}' ({column_field(cfg, col)})")
    needed = needed_columns(cfg, export, extra)
    problem = doubled_column(names, needed)
    if problem:
        raise InputError(path, problem)
    return [c for c in needed if c in names]


def doubled_column(names: Sequence[str], needed: Sequence[str]) -> str | None:
    """A needed column the header names more than once (which one is meant cannot be guessed: a
    reader would take the first), as a problem; else None."""
    for col in needed:
        if names.count(col) > 1:
            return f"column '{col}' appears {names.count(col)} times in the header"
    return None


def read_profiles(path: str, cfg: JobConfig, batch_rows: int | None = None, export: bool = False,
                  extra: Sequence[str] = ()) -> Iterator[pa.Table]:
    """Yield standardized profile tables from one extract file (local or gs://), in batches of
    ``BATCH_ROWS`` rows unless told. ``export``: read and check the opt-out column; ``extra``: more
    extract columns to carry (see standardize)."""
    for profiles, _ in counted_profiles(path, cfg, batch_rows, export, extra):
        yield profiles


def counted_profiles(path: str, cfg: JobConfig, batch_rows: int | None = None, export: bool = False,
                     extra: Sequence[str] = ()) -> Iterator[tuple[pa.Table, list]]:
    """:func:`read_profiles`' batches, each with its counts (``(Count, n)``) of the visitor-ID entries and
    of its distinct ids, which a reader of the whole extract emits for
    :func:`~transforms.profile_columns.check_visitor_entries` and ``check_profile_ids``."""
    batch_rows = batch_rows or BATCH_ROWS
    fmt = cfg.profiles.resolved_format
    offset = 0  # rows of the file before the current batch: an error names the file's line or row
    for table in _raw_tables(path, fmt, cfg, export, batch_rows, extra):
        try:
            if fmt != "csv":  # Arrow's CSV reader checks UTF-8; its JSON and Parquet readers do not
                table.validate(full=True)
            else:
                _refuse_repeated_header(table)
            counts: list = []
            profiles = standardize(table, cfg, path, export, extra, counts)
            counts.append(distinct_ids_at_most(profiles["profile_id"]))
        except BadOptOut as bad:
            raise at_row(path, fmt, f"column '{cfg.profiles.consent_column}': {bad.problem}", bad.row, offset) from None
        except RowProblem as bad:
            raise at_row(path, fmt, bad.problem, bad.row, offset) from None
        except pa.ArrowInvalid as exc:  # (its message may quote the value: never shown)
            if "UTF8" not in str(exc):
                raise InputError(path, f"cannot read the {fmt} extract (ArrowInvalid)") from None
            rows = f"{offset + 1}-{offset + table.num_rows}"
            raise InputError(path, f"not UTF-8 text in rows {rows} {AS_UTF8}") from None
        offset += table.num_rows
        yield profiles, counts


def _raw_tables(path: str, fmt: str, cfg: JobConfig, export: bool, batch_rows: int,
                extra: Sequence[str] = ()) -> Iterator[pa.Table]:
    """The extract's needed columns, as read (strings for CSV), in batches of ``batch_rows``."""
    try:
        with open_input(path, fmt) as handle:
            if fmt == "parquet":
                pf = pq.ParquetFile(handle)
                present = _present(path, pf.schema_arrow.names, cfg, export, extra)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
                    yield pa.Table.from_batches([batch])
            elif fmt == "csv":
                present = _present(path, read_schema_names(path, fmt, pattern=cfg.profiles.path), cfg, export, extra)
                for table in csv_tables(handle, path, present, strings_can_be_null=True):
                    yield from _slices(table, batch_rows)
            else:
                table = _read_jsonl(handle, path)
                if table.num_rows:  # a key no record has: nulls (JSON writers omit them), in no part: preflight
                    for col in (c for c in key_columns(cfg, export) if c not in table.column_names):
                        table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
                    table = _jsonl_opt_out(table, cfg, path, export)
                    table = table.select(_present(path, table.column_names, cfg, export, extra))
                yield from _slices(table, batch_rows)
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        # Arrow's messages can quote the offending row: keep only the kind of problem.
        if fmt == "csv" and isinstance(exc, pa.ArrowInvalid) and "UTF8" in str(exc):
            raise InputError(path, f"not UTF-8 text {AS_UTF8}", line=first_line_not_utf8(path)) from None
        raise InputError(path, f"cannot read the {fmt} extract ({type(exc).__name__})") from None


def _jsonl_opt_out(table: pa.Table, cfg: JobConfig, path: str, export: bool) -> pa.Table:
    """A JSONL part none of whose records has the opt-out field: nulls where ``parts_may_lack`` lists
    it (a writer that leaves null fields out, a part without an opt-out value: a source recording
    opt-outs only), else a failure naming that remedy (a renamed field is never consent)."""
    col = cfg.profiles.consent_column
    if not (export and col) or col in table.column_names:
        return table
    if col not in cfg.profiles.parts_may_lack:
        raise InputError(path, f"no column '{col}' ({cfg.profiles.consent_field}): none of its records has the field (renamed? "
                         "if its writer leaves null fields out and no profile of it has a value, list it in "
                         "profiles.parts_may_lack)")
    return table.append_column(col, pa.nulls(table.num_rows, pa.string()))


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def _refuse_repeated_header(table: pa.Table) -> None:
    """A CSV row whose every cell read is its column's name (after a UTF-8 byte order mark too) is a
    second file's header: ``cat a.csv b.csv`` (two gzip files joined are one's members) read it as a
    profile whose id is the id column's name, exit 0. Raises :class:`RowProblem` at the first. One
    kernel per column, the id's first: a batch with no row holding its name costs one comparison."""
    repeated = None
    for name in table.column_names:
        same = pc.is_in(table[name], value_set=pa.array([name, codecs.BOM_UTF8.decode() + name]))
        repeated = same if repeated is None else pc.and_(repeated, same)
        if not pc.any(repeated).as_py():
            return
    raise RowProblem(pc.index(repeated, True).as_py(), "repeats the header: two files joined (cat a.csv b.csv)? "
                     "keep them apart under profiles.path's glob, or drop the second header")


def at_row(path: str, fmt: str, problem: str, row: int | None, offset: int) -> InputError:
    """``problem`` where the batch's ``row`` is (a bad opt-out value, an empty id): a CSV or JSONL line
    (counted in the file, header and blank lines included), or a Parquet row (from 1); ``offset``:
    the file's rows before the batch. ``row`` None: the file only."""
    if row is None:
        return InputError(path, problem)
    row = offset + row
    if fmt == "parquet":
        return InputError(path, f"row {row + 1}: {problem}")
    line = csv_line_of_row(path, row) if fmt == "csv" else jsonl_line_of_row(path, row)
    return InputError(path, problem, line=line)


def _read_jsonl(handle, path: str) -> pa.Table:
    data = handle.read()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data  # Arrow skips it; json.loads not
    # Find the first bad line ourselves so the error can name it (Arrow's message quotes content).
    try:
        table = _arrow_json(data)
    except pa.ArrowInvalid:
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                try:
                    record = json.loads(raw, object_pairs_hook=refuse_doubled_keys)
                except DoubledKey as doubled:  # Arrow refuses it; json.loads would keep the last value
                    raise InputError(path, f"column '{doubled.key}' appears twice in the record", line=number) from None
                except ValueError:
                    raise InputError(path, "not valid JSON", line=number) from None
                if not isinstance(record, dict):  # an array, a string, a number: no columns
                    raise InputError(path, 'not a JSON object (one record per line, {"column": value, ...})',
                                     line=number)
        change = first_json_type_change(data)
        if change is not None:
            number, column, kinds = change
            raise InputError(path, f"column '{column}': {kinds}", line=number) from None
        raise InputError(path, "inconsistent JSON records") from None
    # Arrow takes strings that look like dates for timestamps ("2020-01-01" would read back as
    # "2020-01-01 00:00:00", a key no dump has): such columns are read again as the text they are.
    dated = {f.name: _as_text(f.type) for f in table.schema if _as_text(f.type) != f.type}
    if dated:
        options = pajson.ParseOptions(explicit_schema=pa.schema(list(dated.items())), unexpected_field_behavior="infer")
        table = _arrow_json(data, options)
    return table


def _arrow_json(data: bytes, options: pajson.ParseOptions | None = None) -> pa.Table:
    """Arrow's reading of JSONL. It infers types block by block; where a later block cannot be
    converted to an earlier one's type (a column null for the first blocks, lists after), the
    types are inferred from the whole file at once. So is a file holding a record longer than a
    block (1 MB: a profile of tens of thousands of visitor IDs), which Arrow may refuse as straddling two."""
    try:
        return pajson.read_json(pa.BufferReader(data), parse_options=options)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        if isinstance(exc, pa.ArrowInvalid) and "straddl" not in str(exc):
            raise
        whole = pajson.ReadOptions(block_size=min(max(len(data), 1 << 20), (1 << 31) - 1))
        return pajson.read_json(pa.BufferReader(data), read_options=whole, parse_options=options)


def _as_text(kind: pa.DataType) -> pa.DataType:
    """``kind`` with its timestamps and dates (in a list too) as strings."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(_as_text(kind.value_type))
    return kind
