"""Rows in a table's sort order: the writers' parts are sorted (and de-duplicated) before they are
written. Key columns become order-preserving integer codes, sorted by numpy (:func:`sorted_rows`;
from the join's (pair, segment set) rows: :func:`sorted_segment_rows`); Arrow's own sort is the
reference and the fallback for column types the codes do not cover."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import is_text_or_binary, plain_array
from transforms.keys import SEGMENT_SET


def order_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int] | None:
    """``(codes, distinct codes)``: a uint64 per value whose ascending order is Arrow's ascending
    order of the values (bytes for strings and binary, nulls last), equal codes for equal values
    (and for nulls); None for types not handled here (floats, lists...). Strings cost one hash pass
    (dictionary-encode) and a sort of the distinct values only."""
    got = _ranked(values, with_values=False)
    return None if got is None else got[:2]


def _ranked(values, with_values: bool) -> tuple[np.ndarray, int, pa.Array | None] | None:
    """:func:`order_codes` and, ``with_values``, the values by code (an Arrow array of the values'
    type, the null last): ``ranked.take(codes)`` gives the values back."""
    values = plain_array(values)
    t, ranked = values.type, None
    if pa.types.is_integer(t):
        uniq, codes = np.unique(values.fill_null(0).to_numpy(zero_copy_only=False), return_inverse=True)
        codes, size = codes.astype(np.uint64), len(uniq)
        ranked = pa.array(uniq, t) if with_values else None
    elif is_text_or_binary(t):
        encoded = pc.dictionary_encode(values)
        order = pc.array_sort_indices(encoded.dictionary)
        ranked = encoded.dictionary.take(order) if with_values else None
        order = order.to_numpy()
        rank = np.empty(len(order), dtype=np.uint64)
        rank[order] = np.arange(len(order), dtype=np.uint64)
        size = len(rank)
        codes = rank[encoded.indices.fill_null(0).to_numpy()] if size else np.zeros(len(values), np.uint64)
    else:
        return None
    if values.null_count:
        codes[values.is_null().to_numpy(zero_copy_only=False)] = size
        size += 1
        ranked = pa.concat_arrays([ranked, pa.nulls(1, t)]) if with_values else None
    return codes, size, ranked


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
    """``sorted_rows(segment_rows(table), sort_by, dedupe=True)``, its columns decoded (no
    dictionaries), the rows built once, in their final order: each key column's order codes are
    taken on the pairs (and on the sets' distinct segment ids), so the exploded rows exist only as
    integer codes until they are sorted and de-duplicated. The writers' sort of a part's memberships,
    where a pair stands for a dozen rows. None when a column's type has no order codes, or a set is null.

    Where the codes fit in 64 bits (the usual part), each exploded row is one packed integer, sorted
    in place, and the rows are decoded from the distinct codes that remain: no row order and no codes
    per row and column, which a part of the 10M many-segments mix (4.8M rows) held at 8 bytes a row
    each (0.51 GiB resident over its input, 0.35 GiB now with the decoded rows; 1.3-4.3 s of CPU,
    0.7-0.8 s now, alternating rounds on a loaded machine)."""
    names = ["segment_id" if n == SEGMENT_SET else n for n in table.column_names]
    starts, lengths, token_arrays, base = [], [], [], 0
    for chunk in table[SEGMENT_SET].chunks:  # each chunk's distinct sets split once
        if chunk.null_count:
            return None
        lists = pc.split_pattern(chunk.dictionary, ",")  # empty tokens too: their rows go below
        offsets = lists.offsets.to_numpy().astype(np.int64)
        at = chunk.indices.to_numpy(zero_copy_only=False)
        starts.append(offsets[:-1][at] + base)
        lengths.append(np.diff(offsets)[at])
        token_arrays.append(pc.list_flatten(lists))
        base += len(token_arrays[-1])
    start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    tokens = pa.concat_arrays(token_arrays) if token_arrays else pa.array([], pa.string())
    del token_arrays
    by_name = dict(zip(names, table.column_names))
    keys = list(sort_by) + [n for n in names if n not in sort_by]
    coded = {name: _ranked(tokens if name == "segment_id" else table[by_name[name]], with_values=True) for name in keys}
    if any(got is None for got in coded.values()):
        return None
    empty = tokens.index("").as_py()  # a set's empty token ("", "5,,6") is no segment
    empty = None if empty < 0 else coded["segment_id"][0][empty]
    del tokens
    token = _row_tokens(start, length)  # each exploded row's token, in segment_rows' order
    bits = {name: max(1, (size - 1).bit_length()) for name, (_, size, _) in coded.items()}
    if sum(bits.values()) > 64:  # codes per row and column, sorted by numpy's lexsort
        pair = np.repeat(np.arange(len(start)), length)
        if empty is not None:
            named = coded["segment_id"][0][token] != empty
            pair, token = pair[named], token[named]
        row = {name: token if name == "segment_id" else pair for name in keys}
        order = sort_order([(codes[row[name]], size) for name, (codes, size, _) in coded.items()], dedupe=True)
        return pa.table([coded[name][2].take(pa.array(coded[name][0][row[name][order]])) for name in names],
                        names=names)
    shifts, shift = {}, 0
    for name in reversed(keys):  # the first key in the highest bits
        shifts[name], shift = np.uint64(shift), shift + bits[name]
    per_pair = np.zeros(len(start), dtype=np.uint64)
    for name in keys:
        if name != "segment_id":
            per_pair |= coded[name][0] << shifts[name]
    packed = np.repeat(per_pair, length)
    segment = coded["segment_id"][0]
    for at in range(0, len(packed), _BLOCK):  # a block at a time: no codes per row besides the packed ones
        packed[at:at + _BLOCK] |= segment[token[at:at + _BLOCK]] << shifts["segment_id"]
    if empty is not None:
        packed = packed[(packed >> shifts["segment_id"]) & np.uint64((1 << bits["segment_id"]) - 1) != empty]
    del token, segment, per_pair
    coded = {name: (size, ranked) for name, (_, size, ranked) in coded.items()}  # the codes per row go
    packed.sort()  # tied rows are equal rows (every column a key): one of each stays
    packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))] if len(packed) else packed
    columns, code = [], np.empty_like(packed)
    for name in names:
        np.right_shift(packed, shifts[name], out=code)
        code &= np.uint64((1 << bits[name]) - 1)
        columns.append(coded[name][1].take(pa.array(code)))  # the take copies: ``code`` serves the next column
    return pa.table(columns, names=names)


_BLOCK = 1 << 16  # rows: 0.5 MiB of temporary codes a block


def _row_tokens(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``start[i] + j`` for each pair ``i`` and ``j < length[i]``, pair after pair: an exploded row's
    token (int32 where they fit), built by one cumulative sum."""
    total = int(length.sum())
    dtype = np.int32 if int(start.max(initial=0)) + int(length.max(initial=0)) < 2**31 else np.int64
    steps = np.ones(total, dtype=dtype)
    if total:
        used = np.flatnonzero(length)
        first = np.cumsum(length)[used] - length[used]  # each named pair's first row
        jump = start[used].astype(np.int64)
        jump[1:] -= start[used[:-1]] + length[used[:-1]] - 1  # from the previous pair's last token
        steps[first] = jump
        np.cumsum(steps, out=steps)
    return steps


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
