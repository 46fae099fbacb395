"""Rows in a table's sort order: the writers' parts are sorted (and de-duplicated) before they are
written. Key columns become order-preserving integer codes, sorted by numpy (:func:`sorted_rows`;
from the join's (pair, segment set) rows: :func:`sorted_segment_rows`); Arrow's own sort is the
reference and the fallback for column types the codes do not cover."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import is_text_or_binary, plain_array
from transforms.dumps import split_tokens
from transforms.keys import SEGMENT_SET


def order_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int] | None:
    """``(codes, distinct codes)``: a uint64 per value whose ascending order is Arrow's ascending
    order of the values (bytes for strings and binary, nulls last), equal codes for equal values
    (and for nulls); None for types not handled here (floats, lists...). Strings cost one hash pass
    (dictionary-encode) and a sort of the distinct values only."""
    values = plain_array(values)
    t = values.type
    if pa.types.is_integer(t):
        uniq, codes = np.unique(values.fill_null(0).to_numpy(zero_copy_only=False), return_inverse=True)
        codes, size = codes.astype(np.uint64), len(uniq)
    elif is_text_or_binary(t):
        encoded = pc.dictionary_encode(values)
        order = pc.array_sort_indices(encoded.dictionary).to_numpy()
        rank = np.empty(len(order), dtype=np.uint64)
        rank[order] = np.arange(len(order), dtype=np.uint64)
        size = len(rank)
        codes = rank[encoded.indices.fill_null(0).to_numpy()] if size else np.zeros(len(values), np.uint64)
    else:
        return None
    if values.null_count:
        codes[values.is_null().to_numpy(zero_copy_only=False)] = size
        size += 1
    return codes, size


def sorted_rows(table: pa.Table, sort_by: list[str], dedupe: bool = False) -> pa.Table:
    """Rows sorted by ``sort_by`` (ascending, nulls last; ties keep their order), as Arrow's
    ``sort_by`` sorts them. With ``dedupe``, repeated rows (all columns equal, nulls equal to nulls)
    are kept once: the remaining columns break ties, which makes repeats neighbours, dropped by one
    comparison with the previous row.

    Each key column becomes order-preserving integer codes (:func:`order_codes`), packed into one
    uint64 when their widths fit: a numpy sort of integers then does what Arrow's multi-key string
    comparator does, in half its time on the writers' memberships."""
    keys = list(sort_by) + ([c for c in table.column_names if c not in sort_by] if dedupe else [])
    n = table.num_rows
    if n < 2:
        return table
    coded = [order_codes(table[c]) for c in keys]
    if any(c is None for c in coded):
        return _arrow_sorted_rows(table, keys, dedupe)
    return table.take(pa.array(sort_order(coded, dedupe)))


def sort_order(coded: list[tuple[np.ndarray, int]], dedupe: bool) -> np.ndarray:
    """The rows' order by their key columns' :func:`order_codes`, first key first: ties keep their
    order; with ``dedupe`` (every column a key, so tied rows are equal), one row of each tie only."""
    codes = [c for c, _ in coded]
    n = len(codes[0])
    if n < 2:
        return np.arange(n)
    bits = [max(1, (size - 1).bit_length()) for _, size in coded]
    if sum(bits) <= 64:
        packed = np.zeros(n, dtype=np.uint64)
        for c, b in zip(codes, bits):
            packed = (packed << np.uint64(b)) | c
        # With dedupe every column is a key: tied rows are equal and only one stays, so any order
        # of ties gives the same table (a faster unstable sort); else ties keep their order.
        order = np.argsort(packed, kind="quicksort" if dedupe else "stable")
        if dedupe:
            ranked = packed[order]
            order = order[np.concatenate(([True], ranked[1:] != ranked[:-1]))]
    else:
        order = np.lexsort(codes[::-1])  # stable; the first key is the primary one
        if dedupe:
            new = np.zeros(n, dtype=bool)
            new[0] = True
            for c in codes:
                ranked = c[order]
                new[1:] |= ranked[1:] != ranked[:-1]
            order = order[new]
    return order


def sorted_segment_rows(table: pa.Table, sort_by: list[str]) -> pa.Table | None:
    """``sorted_rows(segment_rows(table), sort_by, dedupe=True)``, the rows built once, in their
    final order: each key column's order codes are taken on the pairs (and on the sets' distinct
    segment ids) and repeated per segment, so the exploded rows exist only as integer codes until
    they are sorted and de-duplicated. The writers' sort of a part's memberships, where a pair
    stands for a dozen rows. None when a column's type has no order codes, or a set is null."""
    names = ["segment_id" if n == SEGMENT_SET else n for n in table.column_names]
    starts, lengths, token_arrays, base = [], [], [], 0
    for chunk in table[SEGMENT_SET].chunks:  # each chunk's distinct sets split once
        if chunk.null_count:
            return None
        lists = split_tokens(chunk.dictionary, ",")[0]
        offsets = lists.offsets.to_numpy().astype(np.int64)
        at = chunk.indices.to_numpy(zero_copy_only=False)
        starts.append(offsets[:-1][at] + base)
        lengths.append(np.diff(offsets)[at])
        token_arrays.append(lists.values)
        base += len(lists.values)
    start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    pair = np.repeat(np.arange(len(start)), length)  # each exploded row's pair, in segment_rows' order
    token = np.arange(len(pair)) + np.repeat(start - (np.cumsum(length) - length), length)
    tokens = pa.concat_arrays(token_arrays) if token_arrays else pa.array([], pa.string())
    coded = []
    for name in list(sort_by) + [n for n in names if n not in sort_by]:
        got = order_codes(tokens if name == "segment_id" else table[name])
        if got is None:
            return None
        coded.append((got[0][token if name == "segment_id" else pair], got[1]))
    order = sort_order(coded, dedupe=True)
    return pa.table([tokens.take(pa.array(token[order])) if name == "segment_id" else table[n].take(pa.array(pair[order]))
                     for name, n in zip(names, table.column_names)], names=names)


def _arrow_sorted_rows(table: pa.Table, keys: list[str], dedupe: bool) -> pa.Table:
    """:func:`sorted_rows` by Arrow's sort and a comparison of each column with itself shifted by one
    row: for column types :func:`order_codes` does not handle."""
    table = table.sort_by([(c, "ascending") for c in keys])
    n = table.num_rows
    if not dedupe or n < 2:
        return table
    repeat = np.ones(n - 1, dtype=bool)
    for name in table.column_names:
        col = plain_array(table[name])
        prev, cur = col.slice(0, n - 1), col.slice(1)
        equal = pc.or_kleene(pc.equal(cur, prev), pc.and_(pc.is_null(cur), pc.is_null(prev)))
        repeat &= pc.fill_null(equal, False).to_numpy(zero_copy_only=False)
    return table.filter(pa.array(np.concatenate(([True], ~repeat))))
