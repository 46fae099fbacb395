"""A profile batch's keys per data source, with or without the key cache (:mod:`transforms.key_cache`).

Both give :class:`EntryKeys`: the hashes of a data source's keys in row order (what the Bloom filter
and the shards need) and a way to read the ``(key, profile_id)`` rows of the ones kept. Without the
cache every key is computed (:func:`computed_entries`); with it, the rows found in the cache bring
their cached hashes, and only the keys the Bloom filter keeps are read from the cache
(:func:`merged_entries`). Both give the same rows in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import hash64, take_chunked
from transforms.config import DataSourceConfig, JobConfig
from transforms.key_cache_index import HASH_SUFFIX, CachedColumn
from transforms.keys import PROFILE_SHARD_SCHEMA, profile_keys, profile_row_keys


@dataclass
class EntryKeys:
    """One data source's keys of a profile batch, in row order: ``hashes`` (one per key),
    ``without_key`` (profile values that gave none) and ``take(positions)``: those keys' rows."""

    hashes: np.ndarray
    without_key: int
    take: Callable[[np.ndarray], pa.Table]


def computed_entries(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig) -> EntryKeys:
    """Every key computed (no cache)."""
    keyed, without_key = profile_keys(profiles, ds, cfg, binary=True)
    return EntryKeys(hash64(keyed["key"]), without_key, lambda at: keyed.take(pa.array(at)))


@dataclass
class ComputedColumn:
    """A cached column's keys computed for some rows: row-aligned (``row_keys`` and ``row_hashes``,
    as a cache part stores them) and flat (``flat``, ``valid``, ``hashes``; entry -> row ``parents``)."""

    row_keys: pa.Array
    row_hashes: pa.Array
    flat: pa.Array
    valid: np.ndarray
    hashes: np.ndarray
    parents: np.ndarray

    @classmethod
    def of(cls, profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig) -> "ComputedColumn":
        row_keys = profile_row_keys(profiles, ds, cfg)
        listed = pa.types.is_list(row_keys.type)
        flat = row_keys.flatten() if listed else row_keys
        parents = pc.list_parent_indices(row_keys).to_numpy() if listed else np.arange(len(row_keys))
        valid = flat.is_valid().to_numpy(zero_copy_only=False)
        hashes = np.zeros(len(flat), dtype=np.uint64)
        hashes[valid] = hash64(flat.filter(pa.array(valid)))
        row_hashes = pa.ListArray.from_arrays(row_keys.offsets, pa.array(hashes)) if listed else pa.array(hashes)
        return cls(row_keys, row_hashes, flat, valid, hashes, parents)

    def part_columns(self, name: str) -> dict[str, pa.Array]:
        return {name: self.row_keys, name + HASH_SUFFIX: self.row_hashes}


def merged_entries(profile_ids: pa.ChunkedArray | pa.Array, found: np.ndarray, missed: np.ndarray,
                   column: CachedColumn, computed: ComputedColumn) -> EntryKeys:
    """Keys of the rows found in the cache (``found``: cache row, or -1) and of the ``missed`` rows
    (``computed``), merged in row order, each row's keys in their own order."""
    hit_rows = np.flatnonzero(found >= 0)
    cached_at, counts = column.entries(found[hit_rows])
    rows = np.concatenate((np.repeat(hit_rows, counts), missed[computed.parents]))
    order = np.argsort(rows, kind="stable")  # two sorted runs; a row's entries stay in order
    valid = np.concatenate((column.valid(cached_at), computed.valid))[order]
    hashes = np.concatenate((column.hashes(cached_at), computed.hashes))[order]
    kept = np.flatnonzero(valid)
    n_cached = len(cached_at)

    def take(at: np.ndarray) -> pa.Table:
        source = order[kept[at]]  # position in [cached entries..., computed entries...]
        from_cache = source < n_cached
        keys = pa.chunked_array([take_chunked(column.keys, cached_at[source[from_cache]]),
                                 computed.flat.take(pa.array(source[~from_cache] - n_cached))], pa.binary())
        position = np.empty(len(source), dtype=np.int64)
        position[np.flatnonzero(from_cache)] = np.arange(int(from_cache.sum()))
        position[np.flatnonzero(~from_cache)] = int(from_cache.sum()) + np.arange(int((~from_cache).sum()))
        ids = pc.take(profile_ids, pa.array(rows[order][kept[at]]))
        return pa.table({"key": keys.take(pa.array(position)), "profile_id": ids}, schema=PROFILE_SHARD_SCHEMA)

    return EntryKeys(hashes[kept], len(valid) - len(kept), take)


EMPTY_COLUMN = CachedColumn(pa.chunked_array([], pa.binary()), pa.chunked_array([], pa.uint64()))
