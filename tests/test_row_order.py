"""Sorted, de-duplicated rows (pure functions): the same order and rows as Arrow's own sort, from a
table or from the join's (pair, segment set) rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from transforms.arrow_utils import compact_dictionaries, concat_promoted, distinct
from transforms.keys import SEGMENT_SET, segment_rows
from transforms.row_order import order_codes, sorted_rows, sorted_segment_rows


def _random_table(seed: int, n: int = 2000) -> pa.Table:
    rng = np.random.default_rng(seed)
    seg = [None if x == 0 else f"s{x}" for x in rng.integers(0, 4, n)]
    pid = [None if x == 0 else f"p{x:03d}" for x in rng.integers(0, 60, n)]
    return pa.table({"data_source": pa.array(["d1", "d2"] * (n // 2)), "segment_id": seg, "profile_id": pid})


def test_sorted_rows_dedupes_like_distinct_then_sort():
    for seed in range(5):
        table = _random_table(seed)
        expected = distinct(table).sort_by([(c, "ascending") for c in table.column_names])
        got = sorted_rows(table, ["data_source", "segment_id", "profile_id"], dedupe=True)
        assert got.equals(expected)
        assert got.num_rows < table.num_rows  # there were repeats, nulls included


def test_sorted_rows_breaks_ties_with_the_other_columns_so_repeats_meet():
    table = pa.table({"k": ["a", "a", "a", "b"], "v": [2, 1, 2, 1]})
    assert sorted_rows(table, ["k"], dedupe=True).to_pylist() == [
        {"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 1}]
    # without dedupe every row stays, sorted by the key only
    assert sorted_rows(table, ["k"]).column("k").to_pylist() == ["a", "a", "a", "b"]


def _arrow_order(table: pa.Table, keys: list[str], dedupe: bool) -> list[dict]:
    """The oracle: Arrow's own (stable, nulls last) sort, then repeated rows dropped in Python."""
    keys = keys + ([c for c in table.column_names if c not in keys] if dedupe else [])
    rows = table.sort_by([(c, "ascending") for c in keys]).to_pylist()
    return [r for i, r in enumerate(rows) if not dedupe or i == 0 or r != rows[i - 1]]


def _mixed_table(seed: int, n: int, distinct: int, columns: int = 3) -> pa.Table:
    """Strings with nulls, empties, multi-byte characters and prefixes of each other; binary; signed
    and large unsigned integers; a payload column (ties between keys keep their order)."""
    rng = np.random.default_rng(seed)
    words = ["", "a", "ab", "ab\x00", "b", "é", "éa", "z" * 30, "Z", "10", "9"]

    def text(k):
        return [None if x == 0 else (words[x % len(words)] + (str(x) if x > len(words) else ""))
                for x in rng.integers(0, distinct, n)]

    data = {f"s{k}": text(k) for k in range(columns)}
    data["b"] = pa.array([None if x is None else x.encode() for x in text(9)], pa.binary())
    data["i"] = pa.array([None if x == 0 else int(x) - distinct // 2 for x in rng.integers(0, distinct, n)], pa.int64())
    data["u"] = pa.array([int(x) * 2**40 + 2**63 for x in rng.integers(0, 4, n)], pa.uint64())
    data["payload"] = pa.array(np.arange(n))
    return pa.table(data)


@pytest.mark.parametrize("distinct", [5, 4000])  # 4000: the codes need > 64 bits (the lexsort path)
def test_sorted_rows_orders_and_dedupes_as_arrow_sorts(distinct):
    for seed in range(3):
        table = _mixed_table(seed, 3000, distinct, columns=6 if distinct > 100 else 3)
        repeated = pa.concat_tables([table, table.slice(0, 700)]).drop_columns(["payload"])
        chunked = pa.concat_tables([repeated.slice(0, 1000), repeated.slice(1000)])
        keys = ["s1", "i", "s0"]
        got = sorted_rows(chunked, keys, dedupe=True)
        assert got.schema == repeated.schema
        assert got.to_pylist() == _arrow_order(repeated, keys, dedupe=True)
        assert got.num_rows < repeated.num_rows
        for keys in (["s0"], ["u", "b", "s2"], ["i"]):  # without dedupe: every row, ties in input order
            got = sorted_rows(table, keys)
            assert got.to_pylist() == _arrow_order(table, keys, dedupe=False), keys


def test_sorted_rows_small_tables_and_other_types():
    empty = pa.table({"k": pa.array([], pa.string())})
    assert sorted_rows(empty, ["k"], dedupe=True).num_rows == 0
    assert sorted_rows(pa.table({"k": [None]}), ["k"], dedupe=True).to_pylist() == [{"k": None}]
    floats = pa.table({"k": [2.5, None, 1.0, 2.5], "v": ["x", "y", "z", "x"]})  # not coded: Arrow sorts them
    assert sorted_rows(floats, ["k"], dedupe=True).to_pylist() == _arrow_order(floats, ["k"], dedupe=True)
    dictionary = pa.table({"k": pa.array(["b", "a", None, "b"]).dictionary_encode(), "v": [1, 2, 3, 1]})
    assert sorted_rows(dictionary, ["k"], dedupe=True).column("v").to_pylist() == [2, 1, 3]


def _pair_table(seed: int, n: int) -> pa.Table:
    """(pair, segment set) rows as the join sends them, in two pieces with their own dictionaries
    (as two join shards' pieces): sets naming a segment twice ("5,5"), empty ones (they give no
    row), an empty token ("5,,6"); a null profile id (the file audience's unmatched addresses);
    data sources dictionary-encoded."""
    rng = np.random.default_rng(seed)
    sets = ["5", "5,5", "", "7,5,61", "5,,6", "61", "10,9,100", "7"]
    pieces = []
    for part in range(2):
        pieces.append(pa.table({
            "data_source": pa.array([f"d{x}" for x in rng.integers(0, 3, n)]).dictionary_encode(),
            SEGMENT_SET: pa.array([sets[x] for x in rng.integers(0, len(sets) - part, n)]).dictionary_encode(),
            "address": [None if x == 0 else f"a{x}@example.com" for x in rng.integers(0, 40, n)],
            "profile_id": [None if x == 0 else f"p{x:02d}" for x in rng.integers(0, 30, n)],
        }))
    return pa.concat_tables(pieces, promote_options="permissive")


@pytest.mark.parametrize("sort_by", [["data_source", "segment_id", "profile_id"], ["data_source", "segment_id", "address"]])
def test_sorted_segment_rows_are_the_exploded_rows_sorted_and_deduplicated(sort_by):
    for seed in range(4):
        pairs = _pair_table(seed, 400)
        exploded = segment_rows(pairs)
        got = sorted_segment_rows(pairs, sort_by)
        assert got.column_names == exploded.column_names
        text = pa.schema([(name, pa.string()) for name in exploded.column_names])  # Arrow sorts no dictionaries
        assert got.to_pylist() == _arrow_order(exploded.cast(text), sort_by, dedupe=True)
        assert got.equals(sorted_rows(exploded, sort_by, dedupe=True).cast(text))  # decoded, one chunk a column
        assert all(column.num_chunks == 1 for column in got.columns)
        assert 0 < got.num_rows < exploded.num_rows  # repeats were dropped, and rows stayed


def test_sorted_segment_rows_of_nothing_and_of_types_without_codes():
    pairs = _pair_table(0, 10)
    assert sorted_segment_rows(pairs.slice(0, 0), ["data_source"]).num_rows == 0
    only_empty_sets = pairs.set_column(1, SEGMENT_SET, pa.array([""] * pairs.num_rows).dictionary_encode())
    assert sorted_segment_rows(only_empty_sets, ["data_source"]).num_rows == 0
    floats = pairs.append_column("score", pa.array(np.linspace(0, 1, pairs.num_rows)))
    assert sorted_segment_rows(floats, ["data_source"]) is None  # the writer explodes first (Arrow's sort)


def test_sorted_segment_rows_of_a_writers_pieces_whose_codes_need_more_than_64_bits():
    """A bucket's pieces as the writer gathers them (concat_promoted): compacted in the join's split
    (one-byte indices, promoted) beside a table of its own dictionaries, and an empty piece; enough
    distinct values that the codes need more than 64 bits (the lexsort path, a part of millions of
    rows)."""
    rng = np.random.default_rng(3)
    pieces = [_pair_table(seed, 300) for seed in range(3)]
    pieces = [compact_dictionaries(pieces[0]), pieces[1], compact_dictionaries(pieces[2]).slice(0, 0)]
    pairs = concat_promoted(pieces)
    for k in range(7):  # 7 x 9 bits, besides the key columns
        pairs = pairs.append_column(f"x{k}", pa.array([f"v{x}" for x in rng.integers(0, 400, pairs.num_rows)]))
    pairs = pa.concat_tables([pairs, pairs.slice(0, 50)])  # repeated pairs
    exploded = segment_rows(pairs)
    assert sum((size - 1).bit_length() for _, size in map(order_codes, exploded.columns)) > 64
    for sort_by in (["data_source", "segment_id", "address"], ["x3", "segment_id"]):
        got = sorted_segment_rows(pairs, sort_by)
        text = pa.schema([(name, pa.string()) for name in exploded.column_names])
        assert got.equals(sorted_rows(exploded, sort_by, dedupe=True).cast(text))
        assert got.to_pylist() == _arrow_order(exploded.cast(text), sort_by, dedupe=True)


def test_sorted_segment_rows_hold_no_codes_per_row_and_column():
    """The writers sort a part's pairs as one packed code per exploded row, sorted in place, and decode
    the rows from the codes that stay: numpy's peak over the call is a few bytes an exploded row (a
    10M-line part of the many-segments mix, 4.8M rows, peaked 0.51 GiB over its input with an order,
    a pair, a token and a code per key column for each row, 8 bytes each: 0.27 GiB now)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    pairs, per_set = 20_000, 12
    sets = [",".join(map(str, rng.choice(2000, per_set, replace=False))) for _ in range(pairs)]
    table = pa.table({
        "data_source": pa.array(["d1", "d2"] * (pairs // 2)).dictionary_encode(),
        SEGMENT_SET: pa.array(sets).dictionary_encode(),
        "profile_id": [f"p{x:06d}" for x in rng.permutation(pairs)],
    })
    sort_by = ["data_source", "segment_id", "profile_id"]
    tracemalloc.start()
    try:
        got = sorted_segment_rows(table, sort_by)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows = pairs * per_set
    assert got.num_rows == rows  # distinct sets of distinct ids: no repeats
    assert peak < 32 * rows, peak / rows  # numpy: the packed codes, a code per token, the rows. tokens (~26 bytes a row; 82 before)
