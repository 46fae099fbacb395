"""Small vectorized helpers on Arrow arrays and tables, shared by the transforms."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


_TEXT_MODES = (None, "cast", "strict", "raw")


def plain_array(values, text: str | None = None) -> pa.Array:
    """One plain Arrow array: chunks combined (a single chunk taken as it is), dictionary decoded.

    ``values`` is an Arrow array or chunked array, or a Python sequence of str/None (bytes too with
    ``text="raw"``); a single str or bytes is a TypeError.  ``text`` says what the values become:

    * ``None``: their type is kept, whatever it is (hashing, list columns, sorting).
    * ``"cast"``: ``string``, cast from any type (numbers become their text): profile columns.
    * ``"strict"``: ``string``, from string-typed values only (string, large_string, string_view,
      null; any other type is a TypeError): the normalizer's inputs.
    * ``"raw"``: ``string`` or ``large_string`` as they are, binary types *viewed* as text without
      UTF-8 validation (a token that is not UTF-8 simply fails to decode): ciphertext tokens.
    """
    if text not in _TEXT_MODES:
        raise ValueError(f"text must be one of {_TEXT_MODES}, got {text!r}")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    elif not isinstance(values, pa.Array):
        if isinstance(values, (str, bytes)):
            raise TypeError("expected an array of strings, not a single value")
        items = list(values)
        binary = text == "raw" and any(isinstance(item, (bytes, bytearray)) for item in items)
        values = pa.array(items, type=pa.binary() if binary else pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if text is None:
        return values
    if text == "raw":
        return _raw_text(values)
    if text == "strict" and not is_text_type(values.type):
        raise TypeError(f"expected a string array, got Arrow type {values.type}")
    return values if values.type == pa.string() else values.cast(pa.string())


def is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)


def is_text_or_binary(t: pa.DataType) -> bool:
    """Text (:func:`is_text_type`), or binary / large binary (bytes read as text)."""
    return is_text_type(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _raw_text(values: pa.Array) -> pa.Array:
    """``string``/``large_string`` as they are; binary viewed as text (no UTF-8 validation)."""
    t = values.type
    if t == pa.string() or t == pa.large_string():
        return values
    if t == pa.binary():
        return values.view(pa.string())
    if t == pa.large_binary():
        return values.view(pa.large_string())
    if t == pa.string_view():
        return values.cast(pa.large_string())
    if t == pa.binary_view():
        return values.cast(pa.large_binary()).view(pa.large_string())
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.string())
    raise TypeError(f"expected a string array, got Arrow type {t}")


def take_chunked(values: pa.ChunkedArray, at: np.ndarray) -> pa.Array:
    """``values.take(at)`` as one array, chunk by chunk: Arrow's take on a chunked binary array
    first concatenates every chunk (a copy of the whole column per call, whatever ``len(at)``), and
    reads every page of memory-mapped chunks; this costs what the taken values cost."""
    at = np.asarray(at, dtype=np.int64)
    if values.num_chunks == 1 or not len(at):
        return (values.chunk(0) if values.num_chunks else pa.array([], values.type)).take(pa.array(at))
    starts = np.cumsum([0] + [len(c) for c in values.chunks])
    chunk = np.searchsorted(starts, at, side="right") - 1
    order = np.argsort(chunk, kind="stable")
    bounds = np.searchsorted(chunk[order], np.arange(values.num_chunks + 1))
    pieces = [values.chunk(k).take(pa.array(at[order[bounds[k]:bounds[k + 1]]] - starts[k]))
              for k in range(values.num_chunks) if bounds[k + 1] > bounds[k]]
    gathered = pa.concat_arrays(pieces)
    if np.all(order[1:] > order[:-1]):  # the chunks' picks were already in order
        return gathered
    back = np.empty(len(at), dtype=np.int64)
    back[order] = np.arange(len(at))
    return gathered.take(pa.array(back))


def split_by_bucket(table: pa.Table, buckets_per_row: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(bucket, rows of that bucket)`` for every non-empty bucket, in bucket order.

    Each piece is a compact copy (``take``), never a slice: a pickled slice drags its parent's
    whole buffers along, which multiplied shuffle volume and memory by the number of buckets.
    """
    if table.num_rows == 0:
        return
    if 0 <= buckets_per_row.min() and buckets_per_row.max() < 1 << 16:
        # The same stable order, by numpy's radix sort of 16-bit keys (about 6x faster).
        order = np.argsort(buckets_per_row.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(buckets_per_row, kind="stable")
    sorted_buckets = buckets_per_row[order]
    cuts = np.flatnonzero(np.diff(sorted_buckets)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(order)]))
    for start, end in zip(starts, ends):
        yield int(sorted_buckets[start]), table.take(pa.array(order[start:end]))


def fixed_width_binary(raw: bytes | np.ndarray, n: int, width: int) -> pa.BinaryArray:
    """``n`` consecutive ``width``-byte values (bytes, or a uint8 array of ``n * width``) as a
    null-free binary array."""
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = raw if isinstance(raw, bytes) else np.ascontiguousarray(raw, dtype=np.uint8).tobytes()
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def rows_of_width(values: pa.Array, width: int) -> np.ndarray:
    """A null-free string/binary array whose values all have ``width`` bytes, as an ``(n, width)``
    uint8 matrix (a view of its data buffer). Raises ValueError for any other length or a null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    n = len(values)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    if values.null_count or values.type not in (pa.string(), pa.binary()):
        raise ValueError(f"expected {width}-byte values only")
    offsets, data = string_buffers(values)
    if not np.all(np.diff(offsets) == width):
        raise ValueError(f"expected {width}-byte values only")
    return data.reshape(n, width)


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string/binary array's value offsets (int32, ``len + 1``, as stored) and the bytes they
    cover (uint8, starting at ``offsets[0]``), both views of its buffers."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    raw = values.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8)[offsets[0] : offsets[-1]] if raw is not None else np.zeros(0, np.uint8)
    return offsets, data


def delete_bytes(values: pa.StringArray, table: np.ndarray) -> pa.StringArray:
    """Remove every byte ``b`` with ``table[b]`` from each string (nulls become ""). Vectorized:
    one mask over the data buffer, removed bytes counted per row, offsets rebuilt from the new
    lengths. For ASCII bytes only (a multi-byte character's bytes are never in ``table``)."""
    values = pc.fill_null(values, "")
    n = len(values)
    offsets, data = string_buffers(values)
    drop = table[data]
    lengths = np.diff(offsets)
    if len(data):
        starts = np.minimum(offsets[:-1] - offsets[0], len(data) - 1)
        dropped = np.add.reduceat(drop, starts, dtype=np.int32)  # per row; an empty row reads its neighbour...
        lengths = lengths - np.where(lengths > 0, dropped, 0)  # ...so it counts 0
    new_offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(new_offsets), pa.py_buffer(data[~drop].tobytes())])


def explode_list(table: pa.Table, column: str, as_name: str) -> pa.Table:
    """One row per element of the list ``column``; other columns repeated; rows with empty lists vanish."""
    lists = plain_array(table[column])
    parents = pc.list_parent_indices(lists)
    flat = pc.list_flatten(lists)
    rest = table.drop_columns([column]).take(parents)
    return rest.append_column(as_name, flat)


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def concat_promoted(tables: list[pa.Table]) -> pa.Table:
    """The tables as one, chunks kept (the only one as it is). A dictionary column's indices get
    one width, wide enough for all its chunks' dictionaries together: a take or a combine of the
    result unifies them (1-byte pieces of 129 data sources overflowed there)."""
    if len(tables) < 2:
        return tables[0]
    widths = {}
    for field in tables[0].schema:
        if pa.types.is_dictionary(field.type):
            together = sum(len(chunk.dictionary) for t in tables for chunk in t.column(field.name).chunks)
            widths[field.name] = pa.dictionary(_index_type(together), field.type.value_type)
    if widths:
        tables = [t.cast(pa.schema([pa.field(f.name, widths.get(f.name, f.type), f.nullable) for f in t.schema]))
                  for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _index_type(size: int) -> pa.DataType:
    """The smallest index type for a dictionary of ``size`` values."""
    return pa.int8() if size <= 2**7 else pa.int16() if size <= 2**15 else pa.int32()


def distinct(table: pa.Table) -> pa.Table:
    """Drop duplicate rows (all columns)."""
    if table.num_rows == 0:
        return table
    return table.group_by(table.column_names, use_threads=False).aggregate([]).select(table.column_names)


# Internal tables carry names (data source, file, reason) dictionary-encoded: a few bytes a row
# instead of the whole string, which matters in every shuffle. Outputs are cast back to strings.
NAME = pa.dictionary(pa.int32(), pa.string())


def narrow_dictionary(values: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """A dictionary array with the smallest index type its dictionary fits in (1 byte a row for
    fewer than 128 distinct values)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    index = _index_type(len(values.dictionary))
    return values if values.type.index_type == index else values.cast(pa.dictionary(index, values.type.value_type))


def compact_dictionary(values: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """A dictionary array whose dictionary holds only the values its rows use (when it holds more
    values than rows), in their order in the old dictionary, narrowed (:func:`narrow_dictionary`).
    A ``take`` of a few rows keeps the whole dictionary: a dump's shard of a chunk whose lines each
    name another segment set (thousands of segments, a dozen a line) carried every set of the
    chunk, once per shard, through the shuffle and into the join's splits."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    size = len(values.dictionary)
    if size <= len(values):
        return narrow_dictionary(values)
    indices = values.indices.fill_null(0).to_numpy(zero_copy_only=False)
    mask = values.indices.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    used = np.flatnonzero(np.bincount(indices if mask is None else indices[~mask], minlength=size))
    remap = np.zeros(size, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return narrow_dictionary(pa.DictionaryArray.from_arrays(pa.array(remap[indices], mask=mask),
                                                            values.dictionary.take(pa.array(used))))


def compact_dictionaries(table: pa.Table) -> pa.Table:
    """Every dictionary column of ``table`` compacted (:func:`compact_dictionary`)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, compact_dictionary(table.column(i)))
    return table


def constant(value: str, n: int) -> pa.DictionaryArray:
    """``n`` times the same string, dictionary-encoded (n int32 zeros and one dictionary entry)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string()))


def names(values) -> pa.Array:
    """A string array (or numpy object array with None) as a dictionary-encoded ``NAME`` array."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)


def count_runs(table: pa.Table, columns: list[str]) -> list[tuple[tuple, int]]:
    """:func:`count_by` of a non-empty table whose equal combinations of ``columns`` (no nulls) are
    neighbours: the runs of equal neighbours, in table order."""
    starts = np.zeros(table.num_rows, dtype=bool)
    starts[0] = True
    for c in columns:
        values = table[c].combine_chunks()
        starts[1:] |= pc.not_equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(starts)
    keys = [table[c].take(pa.array(at)).to_pylist() for c in columns]
    counts = np.diff(np.append(at, table.num_rows)).tolist()
    return [(tuple(k[i] for k in keys), counts[i]) for i in range(len(at))]


def count_by(table: pa.Table, columns: list[str], sorted_by: list[str] = ()) -> list[tuple[tuple, int]]:
    """``[((value, ...), count), ...]`` for the distinct combinations of ``columns``. With ``sorted_by``
    (the table's sort keys) starting with ``columns`` and no nulls in them, equal combinations are
    neighbours: they are counted as runs (one comparison of neighbours per column) instead of by a
    hash group-by (a written part's members per segment: 500,000 rows, thousands of segments)."""
    if table.num_rows == 0:
        return []
    if list(sorted_by[:len(columns)]) == list(columns) and not any(table[c].null_count for c in columns):
        return count_runs(table, columns)
    grouped = table.group_by(columns, use_threads=False).aggregate([([], "count_all")])
    keys = [grouped[c].to_pylist() for c in columns]
    counts = grouped["count_all"].to_pylist()
    return [(tuple(k[i] for k in keys), counts[i]) for i in range(grouped.num_rows)]
