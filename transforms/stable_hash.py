"""Stable hashing of keys, the same in every process and run: :func:`hash64` (fixed constants, never
Python's randomized ``hash()``), the bucket a row is written to (:func:`bucket_of`, a table split for
an output's writers: :class:`BucketPieces`), and the Bloom filter over key hashes (:class:`KeyFilter`).
Which bucket a row goes to decides which part it is written to: a change here changes
:func:`transforms.incremental.bucketing_identity` (the next night reads the previous parts whole once),
and the key cache's code identity (this module is in ``KEY_MODULES``)."""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import compact_dictionaries, concat_promoted, plain_array, split_by_bucket

# Fixed pseudo-random odd multipliers: the hash of a key must be the same in every process and run.
_COEF = np.random.default_rng(20261123).integers(1, 2**63, size=5, dtype=np.uint64) | np.uint64(1)
MIX = np.uint64(0x9E3779B97F4A7C15)
_WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # a word's low k bytes (8: all)


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
        acc = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64) * MIX
    else:
        if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)
                or pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)):
            values = values.cast(pa.string())
        acc = _string_words(values)
    return mix64(acc)


def mix64(acc: np.ndarray) -> np.ndarray:
    """The finalizer of :func:`hash64` (in place): spreads every input bit over the 64 bits."""
    acc ^= acc >> np.uint64(31)
    acc *= MIX
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
        h2 = (((hashes >> np.uint64(32)) | (hashes << np.uint64(32))) * MIX) | np.uint64(1)
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


class BucketPieces(NamedTuple):
    """A table already split for an output's writers (what :class:`transforms.write_parts.WriteParts`
    would make of it): ``(bucket, rows)`` for each non-empty bucket of ``bucket_by`` among ``buckets``,
    each piece compact and its dictionaries holding its own rows' values only, narrowed. Made where spare threads are (the join's pool)
    rather than on the runner's one thread."""

    bucket_by: str
    buckets: int
    pieces: tuple[tuple[int, pa.Table], ...]

    @property
    def num_rows(self) -> int:
        return sum(rows.num_rows for _, rows in self.pieces)

    def table(self) -> pa.Table:
        """The pieces as one table (bucket by bucket; packed pieces unpacked)."""
        from transforms.packed_tables import unpacked  # it imports this module

        return concat_promoted([unpacked(rows) for _, rows in self.pieces])


def split_for_write(table: pa.Table, bucket_by: str, buckets: int) -> BucketPieces:
    """``table`` split by a stable hash of its ``bucket_by`` column into ``buckets`` (see :class:`BucketPieces`)."""
    pieces = split_by_bucket(table, bucket_of(table[bucket_by], buckets))
    return BucketPieces(bucket_by, buckets, tuple((bucket, compact_dictionaries(rows)) for bucket, rows in pieces))
