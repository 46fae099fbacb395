"""Vectorized table helpers (pure functions)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from transforms.arrow_utils import plain_array, split_by_bucket, take_chunked
from transforms.stable_hash import KeyFilter


def test_plain_array_combines_chunks_and_decodes_dictionaries_in_every_mode():
    values = ["a", None, "ç"]
    shapes = [
        pa.array(values),
        pa.chunked_array([pa.array(values)]),
        pa.chunked_array([pa.array(values[:1]), pa.array(values[1:])]),
        pa.array(values).dictionary_encode(),
        pa.chunked_array([pa.array(values[:2]).dictionary_encode(), pa.array(values[2:]).dictionary_encode()]),
        values,
    ]
    for mode in (None, "cast", "strict", "raw"):
        for shape in shapes:
            got = plain_array(shape, text=mode)
            assert isinstance(got, pa.Array) and got.type == pa.string(), (mode, shape)
            assert got.to_pylist() == values, (mode, shape)
    empty = pa.chunked_array([], type=pa.large_string())
    assert plain_array(empty).type == pa.large_string() and len(plain_array(empty)) == 0
    assert plain_array(empty, text="strict").equals(pa.array([], pa.string()))


def test_plain_array_type_policies():
    ints = pa.chunked_array([pa.array([7, None]), pa.array([10])])
    assert plain_array(ints).equals(pa.array([7, None, 10]))  # kept as they are (hashing, sorting)
    assert plain_array(ints, text="cast").to_pylist() == ["7", None, "10"]  # profile ids may be numbers
    with pytest.raises(TypeError, match="got Arrow type int64"):
        plain_array(ints, text="strict")  # the normalizer takes text only
    with pytest.raises(TypeError):
        plain_array(ints, text="raw")
    for typ in (pa.large_string(), pa.string_view(), pa.null()):
        got = plain_array(pa.array([None, None], typ), text="strict")
        assert got.type == pa.string() and got.to_pylist() == [None, None]
    assert plain_array(pa.array(["a"], pa.large_string()), text="strict").type == pa.string()
    lists = pa.chunked_array([pa.array([["x"], []])])
    assert plain_array(lists).type == pa.list_(pa.string())
    with pytest.raises(ValueError):
        plain_array(pa.array(["a"]), text="utf8")
    for single in ("abc", b"abc"):
        with pytest.raises(TypeError):
            plain_array(single, text="strict")


def test_plain_array_raw_views_binary_as_text_without_validation():
    not_utf8 = [b"QUJD", None, b"\xff\xfe"]
    for typ, expected in ((pa.binary(), pa.string()), (pa.large_binary(), pa.large_string()),
                          (pa.binary_view(), pa.large_string())):
        got = plain_array(pa.array(not_utf8, typ), text="raw")
        assert got.type == expected, typ
        assert got.view(pa.large_binary() if expected == pa.large_string() else pa.binary()).to_pylist() == not_utf8
    assert plain_array(pa.array(["a"], pa.large_string()), text="raw").type == pa.large_string()  # no copy
    assert plain_array(pa.array(["a"], pa.string_view()), text="raw").type == pa.large_string()
    assert plain_array(not_utf8, text="raw").type == pa.string()  # Python bytes: viewed as well
    assert plain_array(pa.nulls(2), text="raw").equals(pa.nulls(2, pa.string()))


@pytest.mark.parametrize("at", [[], [0], [5, 1, 9, 1, 0, 11], list(range(12))[::-1], [11, 10, 3]])
def test_take_chunked_is_take_of_the_whole_column(at):
    """Any order, repeats, nulls, empty chunks: the values Arrow's own take gives."""
    values = pa.chunked_array([[b"a", None, b"c"], [], [b"d"], [b"e", b"f", None, b"h", b"i", b"j", b"k", b"l"]], pa.binary())
    expected = values.combine_chunks().take(pa.array(at, pa.int64()))
    taken = take_chunked(values, np.array(at, dtype=np.int64))
    assert taken.equals(expected) and isinstance(taken, pa.Array)
    assert take_chunked(pa.chunked_array([values.combine_chunks()]), np.array(at, dtype=np.int64)).equals(expected)


def test_hash64_values_are_stable():
    """Parts, Bloom filters, the key cache and the previous nights' buckets all depend on these
    exact values: a change of hash64 must be deliberate (and invalidates what was bucketed)."""
    from transforms.stable_hash import hash64

    values = ["", "a", "p1", "P00000001", "profile-0000001", "x@example.org", "0123456789abcdef",
              "0123456789abcdefg", "+33612345678", "é" * 20, None]
    assert [int(h) for h in hash64(pa.array(values))] == [
        0, 3751698787573309948, 7449847918587652531, 11082118884797386111, 8860237945468220033,
        3005216560546105208, 7731421810085229750, 4363611652357249713, 4676209914491495095,
        3075378869639178676, 0]
    assert [int(h) for h in hash64(pa.array(["P00000001", "P00000002"]))] == [11082118884797386111, 4609118212070417900]


@pytest.mark.parametrize("width", [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 40])
def test_hash64_of_one_width_is_the_general_hash(width):
    """Strings of one width take a strided path: the same hash as when the array mixes widths,
    sliced arrays included."""
    from transforms.stable_hash import hash64

    rng = np.random.default_rng(width)
    raw = [bytes(rng.integers(0, 256, width, dtype=np.uint8)) for _ in range(50)]
    general = hash64(pa.array(raw + [b"x" * (width + 1)], pa.binary()))[:-1]
    assert np.array_equal(hash64(pa.array(raw, pa.binary())), general)
    assert np.array_equal(hash64(pa.array([b"abc", *raw, b"z"], pa.binary()).slice(1, 50)), general)


@pytest.mark.parametrize("spread", [16, 1 << 20])
def test_split_by_bucket_keeps_each_buckets_rows_in_order(spread):
    """Buckets ascending, each bucket's rows in their table order (16-bit bucket numbers take numpy's
    radix sort, larger ones its merge sort: the same order)."""
    buckets = np.random.default_rng(spread).integers(0, spread, 5000)
    table = pa.table({"row": np.arange(5000)})
    pieces = list(split_by_bucket(table, buckets))
    assert [b for b, _ in pieces] == sorted(set(buckets.tolist()))
    for bucket, rows in pieces:
        assert rows["row"].to_pylist() == np.flatnonzero(buckets == bucket).tolist()


def test_a_dump_shard_carries_only_its_own_segment_sets():
    """Lines that each name another segment set (thousands of segments, a dozen a line): every shard
    of a chunk carried the chunk's whole dictionary of sets (a take keeps it), 16 times the data
    through the shuffle and into the join's splits (a 1M import with 2,000 segments: 256 s and
    6.9 GiB, the join 163 s). Each shard now holds its rows' sets only, the same values."""
    from transforms.join_inputs import shards
    from transforms.keys import DUMP_SHARD_SCHEMA, segment_lists

    n, buckets = 4000, 16
    sets = pa.array([f"{i},{i + 1}" for i in range(n)]).dictionary_encode()
    keyed = pa.table({"source_file": pa.array(["f"] * n).dictionary_encode(), "line": pa.array(range(1, n + 1), pa.int64()),
                      "key": pa.array([b"k%d" % i for i in range(n)]), "segments": sets,
                      "removed": pa.array([""] * n).dictionary_encode()}).cast(DUMP_SHARD_SCHEMA)
    hashes = np.random.default_rng(3).integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64)
    pieces = shards(keyed, hashes, buckets)
    assert len(pieces) == buckets
    assert sum(len(rows["segments"].combine_chunks().dictionary) for _, rows in pieces) == n
    for _, rows in pieces:
        lines = np.array(rows["line"].to_pylist()) - 1
        assert rows["segments"].combine_chunks().dictionary_decode().to_pylist() == [f"{i},{i + 1}" for i in lines]
        assert segment_lists(rows["segments"]).to_pylist() == [[str(i), str(i + 1)] for i in lines]
        assert rows["removed"].combine_chunks().dictionary.to_pylist() == [""]  # small ones stay as they are


def test_compact_dictionary_keeps_values_and_nulls():
    from transforms.arrow_utils import compact_dictionary

    values = pa.DictionaryArray.from_arrays(pa.array([5, None, 2, 5, 9], pa.int32()), pa.array([str(i) for i in range(10)]))
    compacted = compact_dictionary(values)
    assert compacted.dictionary.to_pylist() == ["2", "5", "9"]
    assert compacted.dictionary_decode().to_pylist() == ["5", None, "2", "5", "9"]
    assert compacted.type.index_type == pa.int8()


@pytest.mark.parametrize("probes", [1, 3])
def test_the_key_filter_never_misses_an_added_key_and_lets_few_others_through(probes):
    rng = np.random.default_rng(7)
    added, absent = rng.integers(0, 2**64, 20_000, dtype=np.uint64), rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    key_filter = KeyFilter(added, probes=probes)
    mixed = np.concatenate((absent[:1000], added, absent[1000:]))
    got = key_filter.might_contain(mixed)
    assert got[1000:21_000].all()
    passed = got[np.r_[0:1000, 21_000:len(mixed)]].mean()
    assert 0 < passed < (0.004 if probes == 3 else 0.08)  # 16 bits a key: ~0.3% (3 probes), ~6% (1)
    # The first probe turns keys away before the others are looked at: the answer of every probe on every key.
    every = np.ones(len(mixed), dtype=bool)
    for index in key_filter._indexes(mixed):
        index = index.astype(np.int64)
        every &= ((key_filter._bits[index >> 3] >> (index & 7).astype(np.uint8)) & 1).astype(bool)
    assert got.tolist() == every.tolist()
    assert not KeyFilter(np.zeros(0, np.uint64)).might_contain(mixed).any()
    assert len(key_filter.might_contain(np.zeros(0, np.uint64))) == 0


def test_count_by_a_sorted_table_counts_runs_as_the_group_by_counts():
    """A written part is sorted by (data_source, segment_id, ...): its members per segment are counted
    as runs of neighbours; the same counts as the hash group-by, each combination once, nulls and
    other sort orders taking the group-by."""
    from transforms.arrow_utils import count_by, count_runs
    from transforms.row_order import sorted_rows

    rng = np.random.default_rng(5)
    keys = ["data_source", "segment_id", "profile_id"]
    for trial in range(200):
        n = int(rng.integers(1, 300))
        table = pa.table({"data_source": rng.choice(["a", "b", "c"], n),
                          "segment_id": rng.integers(0, int(rng.integers(1, 40)), n).astype(str),
                          "profile_id": rng.integers(0, 50, n).astype(str)})
        table = sorted_rows(table, keys, dedupe=bool(trial % 2))
        runs = count_runs(table, keys[:2])
        assert sorted(runs) == sorted(count_by(table, keys[:2])) and count_by(table, keys[:2], keys) == runs
        assert len({k for k, _ in runs}) == len(runs)
    with_null = pa.table({"data_source": ["a", "a", None], "segment_id": ["1", "1", "1"]})
    assert sorted(count_by(with_null, ["data_source", "segment_id"], ["data_source", "segment_id"]), key=str) == \
        sorted([(("a", "1"), 2), ((None, "1"), 1)], key=str)
    unsorted = pa.table({"data_source": ["a", "b", "a"], "segment_id": ["1", "1", "1"]})
    assert sorted(count_by(unsorted, ["data_source", "segment_id"], ["segment_id"])) == [(("a", "1"), 2), (("b", "1"), 1)]


def test_pieces_of_many_data_sources_are_gathered_and_split_however_many_they_are():
    """The join narrows each shard's constant columns to 1-byte indices (data_source, channel);
    the writers gather a bundle's tables and split them by bucket. A config of 129 data sources
    made that split fail ("the unified dictionary requires a larger index type"): the pieces'
    dictionaries, unified by the split's take, no longer fitted 1 byte."""
    from transforms.arrow_utils import concat_promoted, constant, narrow_dictionary
    from transforms.stable_hash import split_for_write

    tables = [pa.table({"data_source": narrow_dictionary(constant(f"source-{i:03d}", 3)),
                        "profile_id": [f"p{i}-{j}" for j in range(3)]}) for i in range(300)]
    gathered = concat_promoted(tables)
    assert gathered.column("data_source").type.index_type == pa.int16()  # wide enough for every piece's values
    pieces = split_for_write(gathered, "profile_id", 4).pieces
    rows = sorted((r["data_source"], r["profile_id"]) for _, piece in pieces for r in piece.to_pylist())
    assert rows == sorted((f"source-{i:03d}", f"p{i}-{j}") for i in range(300) for j in range(3))
    few = concat_promoted(tables[:5])  # few values: the narrow indices stay
    assert few.column("data_source").type.index_type == pa.int8() and few.num_rows == 15
