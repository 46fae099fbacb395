"""A loaded profile-key cache (:mod:`transforms.key_cache`) in memory: its columns as stored, chunk
by chunk (:class:`CachedColumn`), and what finds a profile row in them (:class:`LoadedCache`: rows
compared in place, and the indexes of sorted row hashes behind it)."""
from __future__ import annotations

import mmap
import threading
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from transforms.stable_hash import packed_bits

if TYPE_CHECKING:
    from transforms.key_cache import CacheLayout

ROW_HASH, ID_CHECK, HASH_SUFFIX = "row_hash", "id_check", ".hash"  # a part's columns besides the keys
# LoadedCache.lookup: the probe rows (a row hash whose top PROBE_BITS bits are zero) show where a
# batch's runs sit; at most IN_PLACE_OFFSETS offsets are tried in place; more than FULL_SEARCH_SHARE
# of a batch left after them is searched in an index of every row.
PROBE_BITS = 6
PROBE_LIMIT = np.uint64(1 << (64 - PROBE_BITS))
IN_PLACE_OFFSETS = 8
FULL_SEARCH_SHARE = 0.1


class CachedColumn:
    """One cached column as stored, chunk by chunk (a chunk per cached profile batch): nothing is
    copied when a cache is loaded, and a batch reads only its rows' pages. Entries are numbered
    across chunks: entry ``i``'s key is ``keys[i]`` (read only for Bloom candidates); for a
    list column a row's entries are its list's values, else one entry a row (``listed``)."""

    def __init__(self, keys: pa.ChunkedArray, hashes: pa.ChunkedArray):
        self.listed = pa.types.is_list(keys.type)
        self._offsets = []  # list columns: per chunk, its rows' entry offsets from 0
        flat_keys, self._hashes = [], []
        for key_chunk, hash_chunk in zip(keys.chunks, hashes.chunks):
            if self.listed:
                offsets = key_chunk.offsets.to_numpy()
                self._offsets.append(offsets - offsets[0])
                key_chunk = key_chunk.values.slice(offsets[0], offsets[-1] - offsets[0])
                hash_offsets = hash_chunk.offsets.to_numpy()
                hash_chunk = hash_chunk.values.slice(hash_offsets[0], hash_offsets[-1] - hash_offsets[0])
            flat_keys.append(key_chunk)
            self._hashes.append(hash_chunk.to_numpy())
        self.keys = pa.chunked_array(flat_keys, keys.type.value_type if self.listed else keys.type)
        self._rows = np.cumsum([0] + [len(c) for c in keys.chunks]).astype(np.int64)  # each chunk's first row
        self._entries = np.cumsum([0] + [len(c) for c in flat_keys]).astype(np.int64)  # each chunk's first entry
        self._key_counts: dict[int, np.ndarray] = {}  # list columns: per chunk, each row's keys (see counts)

    def entries(self, cache_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(entry index, entry count) of each cache row's entries, flattened in row order."""
        cache_rows = np.asarray(cache_rows, dtype=np.int64)
        if not self.listed:
            return cache_rows, np.ones(len(cache_rows), dtype=np.int64)
        starts = _by_chunk(self._rows, cache_rows, lambda c, at: self._entries[c] + self._offsets[c][at], np.int64)
        counts = _by_chunk(self._rows, cache_rows, lambda c, at: self._entries[c] + self._offsets[c][at + 1], np.int64) - starts
        # entry j of row i is starts[i] + j: each row's run of entries, shifted to its start
        return np.arange(int(counts.sum())) + np.repeat(starts - (np.cumsum(counts) - counts), counts), counts

    def hashes(self, entries: np.ndarray) -> np.ndarray:
        """The 64-bit hashes of these entries' keys."""
        return _by_chunk(self._entries, entries, lambda c, at: self._hashes[c][at], np.uint64)

    def valid(self, entries: np.ndarray) -> np.ndarray:
        """Whether each of these entries is a key (not null), read from the validity bits."""
        return _by_chunk(self._entries, entries, lambda c, at: _valid_bits(self.keys.chunk(c), at), bool)

    def counts(self, cache_rows: np.ndarray) -> tuple[int, int]:
        """``(entries, keys)`` of these cache rows: their values, and those that gave a key (not
        null). Per row, not per entry: a list column's valid entries are counted once per chunk."""
        cache_rows = np.asarray(cache_rows, dtype=np.int64)
        if not self.listed:
            return len(cache_rows), int(self.valid(cache_rows).sum())
        sizes = _by_chunk(self._rows, cache_rows, lambda c, at: self._offsets[c][at + 1] - self._offsets[c][at], np.int64)
        keys = _by_chunk(self._rows, cache_rows, lambda c, at: self._row_keys(c)[at], np.int64)
        return int(sizes.sum()), int(keys.sum())

    def row_flags(self, cache_rows: np.ndarray, memo: dict, entry_mask: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Whether each cache row has a key (an entry not null) whose hash ``entry_mask`` keeps
        (hashes -> bool). A chunk's rows are flagged the first time a row of it is asked for, and
        kept in ``memo`` (chunk -> a bit per row): one pass over a chunk's hashes per run, however many
        batches read it, instead of a gather per batch."""
        def pick(c: int, at: np.ndarray) -> np.ndarray:
            bits = memo.get(c)
            if bits is None:  # two threads may compute a chunk's flags at once: the same flags
                flags = self._per_row(c, entry_mask(self._hashes[c]) & self._chunk_valid(c)) > 0
                bits = memo[c] = np.packbits(flags, bitorder="little")  # a bit a row
            return packed_bits(bits, at)
        return _by_chunk(self._rows, np.asarray(cache_rows, dtype=np.int64), pick, bool)

    def _chunk_valid(self, c: int) -> np.ndarray:
        keys = self.keys.chunk(c)
        return keys.is_valid().to_numpy(zero_copy_only=False) if keys.null_count else np.ones(len(keys), bool)

    def _row_keys(self, c: int) -> np.ndarray:
        """A list chunk's keys per row (entries not null), computed once."""
        counts = self._key_counts.get(c)
        if counts is None:
            counts = self._per_row(c, self._chunk_valid(c))
            counts = self._key_counts[c] = counts.astype(np.uint8) if counts.max(initial=0) < 256 else counts  # (kept small)
        return counts

    def _per_row(self, c: int, entry_mask: np.ndarray) -> np.ndarray:
        """How many entries of each row of chunk ``c`` the mask keeps (a scalar column: the mask)."""
        if not self.listed:
            return entry_mask
        kept = np.concatenate(([0], np.cumsum(entry_mask, dtype=np.int32)))
        offsets = self._offsets[c]
        return kept[offsets[1:]] - kept[offsets[:-1]]


def _by_chunk(starts: np.ndarray, at: np.ndarray, pick, dtype) -> np.ndarray:
    """``pick(chunk, positions in it)`` for the positions ``at`` numbered across chunks (``starts``:
    each chunk's first position, then the total), in ``at``'s order."""
    out = np.empty(len(at), dtype=dtype)
    if not len(at):
        return out
    first, last = (int(c) for c in np.searchsorted(starts, [at.min(), at.max()], side="right") - 1)
    if first == last:  # a batch's rows usually come from one cached batch
        out[:] = pick(first, at - starts[first])
        return out
    chunk = np.searchsorted(starts, at, side="right") - 1
    order = np.argsort(chunk, kind="stable")
    bounds = np.searchsorted(chunk[order], np.arange(first, last + 2))
    for c, lo, hi in zip(range(first, last + 1), bounds[:-1], bounds[1:]):
        if hi > lo:
            out[order[lo:hi]] = pick(c, at[order[lo:hi]] - starts[c])
    return out


def _valid_bits(values: pa.Array, at: np.ndarray) -> np.ndarray:
    """``values.is_valid()`` at positions ``at``, from the validity bitmap (no pass over the array)."""
    if values.null_count == 0:
        return np.ones(len(at), dtype=bool)
    return packed_bits(np.frombuffer(values.buffers()[0], dtype=np.uint8), at + values.offset)


class LoadedCache:
    """A published cache in memory: the columns as stored, and what finds a profile row in them."""

    def __init__(self, table: pa.Table, manifest: dict, layout: CacheLayout, maps: tuple = (), intact: tuple = ()):
        self._maps = maps  # the memory-mapped local parts the table's buffers point into
        self._intact = intact  # per part, a future: whether it matched its manifest entry's digest
        self.manifest, self.total_rows = manifest, table.num_rows
        self.columns = {name: CachedColumn(table[name], table[name + HASH_SUFFIX]) for name in layout.columns}
        self._by_row = (table[ROW_HASH], table[ID_CHECK])  # in the cache's row order (mapped)
        self._probes = _row_index(*_probe_rows(table[ROW_HASH], table[ID_CHECK]))
        # The rows of every part but the biggest (a first night's whole extract): what later nights
        # computed, usually a few percent of the cache, found wherever tonight's rows sit.
        sizes = [part["rows"] for part in manifest["parts"]] or [0]
        big = int(np.argmax(sizes))
        start, end = sum(sizes[:big]), sum(sizes[:big + 1])
        minor = [table.slice(0, start), table.slice(end)]
        self._minor = _row_index(np.concatenate([t[ROW_HASH].to_numpy() for t in minor]),
                                 np.concatenate([t[ID_CHECK].to_numpy() for t in minor]), np.r_[0:start, end:self.total_rows])
        self._index, self._index_lock = None, threading.Lock()  # every row, sorted: built when needed
        self.release_pages()

    def intact(self) -> bool:
        """Whether every part matched its manifest entry's digest (waits for the check): nothing
        read from the cache may leave a run before this said True."""
        try:
            return all(future.result() for future in self._intact)
        except Exception:  # noqa: BLE001 - a part that cannot be read to the end is not intact
            return False

    def checked(self) -> bool:
        """Whether the parts' digest check is over (:meth:`intact` would not wait)."""
        return all(future.done() for future in self._intact)

    def release_pages(self) -> None:
        """Drop the pages of the memory-mapped parts from this process's resident memory (they stay
        in the OS page cache; a key read later maps its page again). Called after each profile
        batch: the keys a batch read would otherwise stay resident until the bundle ends."""
        for part in self._maps:
            part.madvise(mmap.MADV_DONTNEED)

    def lookup(self, hashes: np.ndarray, checks: np.ndarray) -> np.ndarray:
        """The cache row of each row hash whose id check agrees too, or -1 (the row's keys are
        then computed: a row not found costs time, never a wrong key).

        An extract is usually read in the order it was cached, so a batch's rows sit in runs of
        consecutive cache rows. The batch's probe rows (1 in 2**PROBE_BITS: a row hash whose top
        bits are zero) are searched in the probe index, and the offsets they show (the most
        common first) are tried on the whole batch in place: a slice compared, where a search
        costs a binary search a row. When more than FULL_SEARCH_SHARE of the batch is left (an
        extract in another order), the rest is searched in an index of every row, built then. Rows
        of the cache's smaller parts (computed on later nights) are searched wherever they are."""
        found = np.full(len(hashes), -1, dtype=np.int64)
        n, total = len(hashes), self.total_rows
        if not total or not n:
            return found
        probes = np.flatnonzero(hashes < PROBE_LIMIT)
        at = _search(self._probes, hashes[probes], checks[probes])
        offsets, counts = np.unique((at - probes)[at >= 0], return_counts=True)
        for offset in offsets[np.argsort(-counts, kind="stable")][:IN_PLACE_OFFSETS].tolist():
            lo, hi = max(0, -offset), min(n, total - offset)
            if hi <= lo:
                continue
            same = (_column_slice(self._by_row[0], lo + offset, hi - lo) == hashes[lo:hi]) \
                & (_column_slice(self._by_row[1], lo + offset, hi - lo) == checks[lo:hi]) & (found[lo:hi] < 0)
            found[lo:hi][same] = lo + offset + np.flatnonzero(same)
        rest = np.flatnonzero(found < 0)
        found[rest] = _search(self._minor, hashes[rest], checks[rest])
        rest = rest[found[rest] < 0]
        if len(rest) > FULL_SEARCH_SHARE * n:
            found[rest] = _search(self._full_index(), hashes[rest], checks[rest])
        return found

    def _full_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._index_lock:
            if self._index is None:
                self._index = _row_index(self._by_row[0].to_numpy(), self._by_row[1].to_numpy())
                self.release_pages()
            return self._index


def _column_slice(column: pa.ChunkedArray, start: int, length: int) -> np.ndarray:
    return column.slice(start, length).to_numpy()


def _probe_rows(hashes: pa.ChunkedArray, checks: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cache's probe rows (a row hash below PROBE_LIMIT): ``(their hashes, id checks, rows)``."""
    picked, start = [], 0
    for hash_chunk, check_chunk in zip(hashes.chunks, checks.chunks):
        h = hash_chunk.to_numpy()
        at = np.flatnonzero(h < PROBE_LIMIT)
        picked.append((h[at], check_chunk.to_numpy()[at], at + start))
        start += len(h)
    if not picked:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts) for parts in zip(*picked))


def _search(index: tuple[np.ndarray, np.ndarray, np.ndarray], hashes: np.ndarray, checks: np.ndarray) -> np.ndarray:
    """The row of each row hash (whose id check agrees) in ``index`` (see :func:`_row_index`), or -1."""
    sorted_hashes, rows, sorted_checks = index
    found = np.full(len(hashes), -1, dtype=np.int64)
    if not len(sorted_hashes) or not len(hashes):
        return found
    order = hash_order(hashes)  # sorted queries: searchsorted walks the index once
    at = np.minimum(np.searchsorted(sorted_hashes, hashes[order]), len(sorted_hashes) - 1)
    hit = (sorted_hashes[at] == hashes[order]) & (sorted_checks[at] == checks[order])
    found[order[hit]] = rows[at[hit]]
    return found


def hash_order(hashes: np.ndarray) -> np.ndarray:
    """A permutation that sorts 64-bit ``hashes`` (equal ones in any order), like ``np.argsort``
    but about twice as fast: each position is packed into the low bits of its hash and the packed
    values are sorted without an index; the few neighbours whose remaining high bits tie (about
    n**2 / 2**(65 - log2 n) of them: ~50 at 10M) are then put in order of their whole hash."""
    n = len(hashes)
    bits = np.uint64(max(1, (n - 1).bit_length()))
    low = (np.uint64(1) << bits) - np.uint64(1)
    packed = (hashes & ~low) | np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.int64)
    high = packed >> bits
    tie = np.flatnonzero(high[1:] == high[:-1])
    if len(tie):  # whole groups of equal high bits, each contiguous: sorted in place by their hash
        at = np.union1d(tie, tie + 1)
        order[at] = order[at][np.lexsort((hashes[order[at]], high[at]))]
    return order


def _row_index(hashes: np.ndarray, checks: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row hashes sorted for lookups: ``(sorted hashes, their rows, their id checks)``; ``rows``:
    the cache rows of ``hashes``, increasing (default: their positions)."""
    order = hash_order(hashes)  # rows of one hash in any order: each group is reduced below
    sorted_hashes, sorted_checks = hashes[order], checks[order]
    repeated = sorted_hashes[1:] == sorted_hashes[:-1]
    if repeated.any():
        # Repeats of one row (the same profile twice) keep the first (its lowest row); two
        # different ids with one row hash (a collision: their id checks differ) are both
        # dropped, so those rows are computed.
        first = np.flatnonzero(np.concatenate(([True], ~repeated)))
        lowest = np.minimum.reduceat(order, first)
        kept = np.minimum.reduceat(sorted_checks, first) == np.maximum.reduceat(sorted_checks, first)
        sorted_hashes, sorted_checks, order = sorted_hashes[first][kept], sorted_checks[first][kept], lowest[kept]
    return sorted_hashes, (order if rows is None else rows[order]), sorted_checks
