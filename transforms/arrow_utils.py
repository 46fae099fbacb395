"""Small vectorized helpers on Arrow arrays and tables, shared by the transforms."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Fixed pseudo-random odd weights: the bucket of a key must be the same in every process and run.
_WEIGHTS = np.random.default_rng(20261123).integers(1, 2**31, size=64, dtype=np.uint32) | np.uint32(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """A stable bucket number in ``[0, buckets)`` for every value (nulls go to bucket 0).

    Strings are hashed over their UTF-8 bytes with position weights (vectorized with numpy);
    integers are mixed directly. Same value, same bucket, in any process.
    """
    values = _plain(values)
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pa.types.is_integer(values.type):
        ints = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        mixed = ints * _MIX
    else:
        if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)):
            values = values.cast(pa.string())
        values = values.cast(pa.large_binary()) if not pa.types.is_large_binary(values.type) else values
        values = pc.fill_null(values, b"")
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] is not None else np.zeros(0, np.uint8)
        data = data[offsets[0] : offsets[-1]]
        offsets = offsets - offsets[0]
        lengths = np.diff(offsets)
        if len(data) == 0:
            mixed = lengths.astype(np.uint64) * _MIX
        else:
            starts = np.repeat(offsets[:-1].astype(np.int32), lengths)
            position = np.arange(len(data), dtype=np.int32)
            position -= starts
            position &= 63
            weighted = _WEIGHTS[position]
            weighted *= data  # uint32 arithmetic wraps: a hash, not a sum
            weighted += _WEIGHTS[(data & 63).astype(np.int32)]
            sums = np.add.reduceat(weighted, np.minimum(offsets[:-1], len(data) - 1), dtype=np.uint32)
            sums = np.where(lengths == 0, np.uint32(0), sums)
            mixed = (sums.astype(np.uint64) ^ (lengths.astype(np.uint64) << np.uint64(32))) * _MIX
    mixed ^= mixed >> np.uint64(29)
    return (mixed % np.uint64(buckets)).astype(np.int64)


def split_by_bucket(table: pa.Table, buckets_per_row: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(bucket, rows of that bucket)`` for every non-empty bucket, in bucket order."""
    if table.num_rows == 0:
        return
    order = np.argsort(buckets_per_row, kind="stable")
    sorted_buckets = buckets_per_row[order]
    cuts = np.flatnonzero(np.diff(sorted_buckets)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(order)]))
    taken = table.take(pa.array(order))
    for start, end in zip(starts, ends):
        yield int(sorted_buckets[start]), taken.slice(start, end - start)


def explode_list(table: pa.Table, column: str, as_name: str) -> pa.Table:
    """One row per element of the list ``column``; other columns repeated; rows with empty lists vanish."""
    lists = _plain(table[column])
    parents = pc.list_parent_indices(lists)
    flat = pc.list_flatten(lists)
    rest = table.drop_columns([column]).take(parents)
    return rest.append_column(as_name, flat)


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def distinct(table: pa.Table) -> pa.Table:
    """Drop duplicate rows (all columns)."""
    if table.num_rows == 0:
        return table
    return table.group_by(table.column_names, use_threads=False).aggregate([]).select(table.column_names)


def constant(value, n: int, type_: pa.DataType = pa.string()) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def count_by(table: pa.Table, columns: list[str]) -> list[tuple[tuple, int]]:
    """``[((value, ...), count), ...]`` for the distinct combinations of ``columns``."""
    if table.num_rows == 0:
        return []
    grouped = table.group_by(columns, use_threads=False).aggregate([([], "count_all")])
    keys = [grouped[c].to_pylist() for c in columns]
    counts = grouped["count_all"].to_pylist()
    return [(tuple(k[i] for k in keys), counts[i]) for i in range(grouped.num_rows)]
