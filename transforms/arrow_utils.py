"""Small vectorized helpers on Arrow arrays and tables, shared by the transforms."""
from __future__ import annotations

import itertools
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Fixed pseudo-random odd multipliers: the hash of a key must be the same in every process and run.
_COEF = np.random.default_rng(20261123).integers(1, 2**63, size=5, dtype=np.uint64) | np.uint64(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # a word's low k bytes (8: all)


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


def _string_words(values: pa.Array) -> np.ndarray:
    """Mix a string's length with its first 16 and last 16 bytes (a string of up to 32 bytes is
    read whole). Vectorized: four unaligned uint64 gathers per row, no per-byte passes. Keys that
    differ only in their middle past 32 bytes share a hash: that costs balance, never correctness
    (shards and the Bloom filter are followed by an exact join)."""
    n = len(values)
    values = pc.fill_null(values.cast(pa.large_binary()), b"")
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    raw = values.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8)[offsets[0] : offsets[-1]] if raw is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    ends = starts + lengths
    if n and lengths.min() == lengths.max():  # one width (fixed-width ids, digests): strided reads, scalar masks
        return _equal_width_words(data, n, int(lengths[0]))
    acc = lengths.astype(np.uint64) * _COEF[4]
    if len(lengths) and lengths.min() >= 16:  # common case (digests, visitor IDs, most emails): no masks
        words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))  # unaligned view
        acc += words[starts] * _COEF[0]
        acc += words[starts + 8] * _COEF[1]
        acc += words[ends - 16] * _COEF[2]
        acc += words[ends - 8] * _COEF[3]
        return acc
    padded = np.zeros(len(data) + 16, dtype=np.uint8)
    padded[: len(data)] = data
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))

    def masked(position: np.ndarray, available: np.ndarray) -> np.ndarray:
        return words[position] & _WORD_MASKS[np.clip(available, 0, 8)]  # the bytes of a partial word

    acc += masked(starts, lengths) * _COEF[0]
    acc += masked(starts + 8, lengths - 8) * _COEF[1]
    tail = np.maximum(ends - 16, starts)
    acc += masked(tail, ends - tail) * _COEF[2]
    tail = np.maximum(ends - 8, starts)
    acc += masked(tail, ends - tail) * _COEF[3]
    return acc


def _equal_width_words(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """:func:`_string_words` of ``n`` strings of ``width`` bytes each, back to back in ``data``: the
    same four words and masks, read as strided views (no per-row positions or masks)."""
    if width < 16:  # a word may read past the last string: zeros there (masked out anyway)
        padded = np.zeros(n * width + 16, dtype=np.uint8)
        padded[: n * width] = data
    else:  # every word lies within its string: read in place
        padded = data
    acc = np.full(n, width, dtype=np.uint64) * _COEF[4]
    if not width:
        return acc
    for k, (position, available) in enumerate(((0, width), (8, width - 8), (max(width - 16, 0), min(width, 16)),
                                               (max(width - 8, 0), min(width, 8)))):
        if available <= 0:
            continue  # a masked-out word: adds 0
        word = np.ndarray(shape=(n,), dtype="<u8", buffer=padded, offset=position, strides=(width,))
        if available < 8:
            word = word & _WORD_MASKS[available]
        acc += word * _COEF[k]
    return acc


def hash64(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash of every value (nulls hash like empty strings), as ``uint64``.

    Same value, same hash, in any process and run: fixed constants, never Python's randomized
    ``hash()``. Integers are mixed directly; strings by :func:`_string_words`.
    """
    values = plain_array(values)
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    if pa.types.is_integer(values.type):
        acc = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64) * _MIX
    else:
        if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)
                or pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)):
            values = values.cast(pa.string())
        acc = _string_words(values)
    acc ^= acc >> np.uint64(31)
    acc *= _MIX
    acc ^= acc >> np.uint64(29)
    return acc


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """A stable bucket number in ``[0, buckets)`` for every value."""
    return buckets_from_hash(hash64(values), buckets)


def buckets_from_hash(hashes: np.ndarray, buckets: int) -> np.ndarray:
    return (hashes % np.uint64(buckets)).astype(np.int64)


class KeyFilter:
    """A Bloom filter over 64-bit key hashes: ``might_contain`` never misses a key that was added.

    ``bits_per_key`` bits per key (the bit count rounded up to a power of two) and ``probes``
    probes by double hashing; at 16 bits and 3 probes about 0.3% of absent keys pass. Building and
    probing are vectorized (numpy scatter/gather over a packed bit array).
    """

    def __init__(self, hashes: np.ndarray, bits_per_key: int = 16, probes: int = 3):
        n_bits = 1 << max(int(max(len(hashes), 1) * bits_per_key - 1).bit_length(), 6)
        self._mask = np.uint64(n_bits - 1)
        self._probes = probes
        flags = np.zeros(n_bits, dtype=bool)
        for index in self._indexes(hashes):
            flags[index.astype(np.int64)] = True
        self._bits = np.packbits(flags, bitorder="little")

    def _indexes(self, hashes: np.ndarray):
        h2 = (((hashes >> np.uint64(32)) | (hashes << np.uint64(32))) * _MIX) | np.uint64(1)
        for i in range(self._probes):
            yield (hashes + np.uint64(i) * h2) & self._mask

    def might_contain(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each key may have been added. The first probe (no second hash to compute) turns
        most absent keys away; the others look at the keys it kept only: the same answer for about
        40% of the work, where most keys probed are absent (a night's profile keys)."""
        keep = self._probe(hashes & self._mask)
        at = np.flatnonzero(keep)
        if len(at) and self._probes > 1:
            rest, kept = hashes[at], np.ones(len(at), dtype=bool)
            for index in itertools.islice(self._indexes(rest), 1, None):
                kept &= self._probe(index)
            keep[at] = kept
        return keep

    def _probe(self, index: np.ndarray) -> np.ndarray:
        return packed_bits(self._bits, index.astype(np.int64))

    @property
    def size_bytes(self) -> int:
        return self._bits.nbytes


def packed_bits(bits: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Bits ``at`` (int64 positions) of a packed little-endian bit array (``np.packbits(...,
    bitorder="little")``, an Arrow validity bitmap), as bools."""
    return ((bits[at >> 3] >> (at & 7).astype(np.uint8)) & 1).astype(bool)


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
    """The tables as one, chunks kept (the only one as it is); dictionary columns whose index widths
    differ are promoted to a common one."""
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


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
    size = len(values.dictionary)
    index = pa.int8() if size <= 2**7 else pa.int16() if size <= 2**15 else pa.int32()
    return values if values.type.index_type == index else values.cast(pa.dictionary(index, values.type.value_type))


class BucketPieces(NamedTuple):
    """A table already split for an output's writers (what :class:`transforms.publish.WriteParts`
    would make of it): ``(bucket, rows)`` for each non-empty bucket of ``bucket_by`` among ``buckets``,
    each piece compact and its dictionaries narrowed. Made where spare threads are (the join's pool)
    rather than on the runner's one thread."""

    bucket_by: str
    buckets: int
    pieces: tuple[tuple[int, pa.Table], ...]

    @property
    def num_rows(self) -> int:
        return sum(rows.num_rows for _, rows in self.pieces)

    def table(self) -> pa.Table:
        """The pieces as one table (bucket by bucket)."""
        return concat_promoted([rows for _, rows in self.pieces])


def split_for_write(table: pa.Table, bucket_by: str, buckets: int) -> BucketPieces:
    """``table`` split by a stable hash of its ``bucket_by`` column into ``buckets`` (see :class:`BucketPieces`)."""
    pieces = split_by_bucket(table, bucket_of(table[bucket_by], buckets))
    return BucketPieces(bucket_by, buckets, tuple((bucket, narrow_dictionaries(rows)) for bucket, rows in pieces))


def narrow_dictionaries(table: pa.Table) -> pa.Table:
    """Every dictionary column of ``table`` narrowed (:func:`narrow_dictionary`)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, narrow_dictionary(table.column(i)))
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


def count_by(table: pa.Table, columns: list[str]) -> list[tuple[tuple, int]]:
    """``[((value, ...), count), ...]`` for the distinct combinations of ``columns``."""
    if table.num_rows == 0:
        return []
    grouped = table.group_by(columns, use_threads=False).aggregate([([], "count_all")])
    keys = [grouped[c].to_pylist() for c in columns]
    counts = grouped["count_all"].to_pylist()
    return [(tuple(k[i] for k in keys), counts[i]) for i in range(grouped.num_rows)]
