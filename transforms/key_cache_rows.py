"""A profile batch's keys per data source, with or without the key cache (:mod:`transforms.key_cache`).

Both give :class:`EntryKeys`: how many keys the batch has, and the ``(key, profile_id)`` rows the data
source's Bloom filter keeps (the candidates) and the IV check's reference keys, when asked. Without
the cache every key is computed (:func:`computed_entries`); with it (:func:`merged_entries`), the rows
found in the cache are counted per row, and only those holding a candidate (or reference) key --
flagged once per cache chunk, :meth:`~transforms.key_cache_index.CachedColumn.row_flags` -- have their
entries read: a dump usually names a small share of the profiles, and a night's batch is mostly
cached rows. Both give the same rows in the same order (tested).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import take_chunked
from transforms.config import DataSourceConfig, JobConfig
from transforms.iv_check import reference_filter, reference_positions
from transforms.key_cache import column_name
from transforms.key_cache_index import HASH_SUFFIX, CachedColumn
from transforms.keys import PROFILE_SHARD_SCHEMA, normalization_key, profile_keys, profile_row_keys
from transforms.parallel import OnceEach
from transforms.stable_hash import KeyFilter, hash64


@dataclass
class EntryKeys:
    """One data source's keys of a profile batch: ``keys`` (values that gave one), ``without_key``
    (values that gave none); ``candidates()``: the ``(key, profile_id)`` rows whose key the data
    source's Bloom filter keeps (none without a filter), in row order, and their keys' hashes;
    ``reference()``: the keys of the IV check's reference (:func:`~transforms.iv_check.reference_positions`;
    a histogram is made of them: their order is not kept)."""

    keys: int
    without_key: int
    candidates: Callable[[], tuple[pa.Table, np.ndarray]]
    reference: Callable[[], pa.ChunkedArray]


def computed_entries(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, key_filter: KeyFilter | None,
                     memo: OnceEach | None = None) -> EntryKeys:
    """Every key computed (no cache). With ``memo`` (one per profile batch), data sources whose keys
    are decided alike (the same :func:`~transforms.key_cache.column_name`: two partners' hashed
    emails under the same rules, say) share one computation of the keys and their hashes, as they
    share a cached column with the cache, and normalization is shared as :func:`~transforms.keys.normalized`
    says."""

    def compute() -> tuple[pa.Table, int, np.ndarray]:
        keyed, without_key = profile_keys(profiles, ds, cfg, binary=True, memo=memo)
        return keyed, without_key, hash64(keyed["key"])

    if memo is None:
        keyed, without_key, hashes = compute()
    else:
        keyed, without_key, hashes = memo.get(column_name(ds, cfg), compute)

    def candidates() -> tuple[pa.Table, np.ndarray]:
        at = np.flatnonzero(_kept(key_filter)(hashes))
        return keyed.take(pa.array(at)), hashes[at]

    return EntryKeys(len(hashes), without_key, candidates, lambda: keyed["key"].take(pa.array(reference_positions(hashes))))


def shared_work(cfg: JobConfig) -> frozenset:
    """The memo keys that more than one of a batch's data sources asks for: the keys of data sources
    decided alike (:func:`computed_entries`), and the normalized values that data sources keyed apart
    both start from (:func:`~transforms.keys.normalized`; with the cache, a cached column's).
    Empty when no two data sources start from the same work: a batch then gets no memo."""
    identities = {}
    for ds in cfg.data_sources:
        identities.setdefault(column_name(ds, cfg), []).append(ds)
    normalizations = Counter(normalization_key(sources[0], cfg) for sources in identities.values())
    normalizations.pop(None, None)
    return frozenset([*(key for key, sources in identities.items() if len(sources) > 1),
                      *(key for key, n in normalizations.items() if n > 1)])


def _kept(key_filter: KeyFilter | None) -> Callable[[np.ndarray], np.ndarray]:
    """Which key hashes the filter keeps: none without one (a data source without dump lines)."""
    return key_filter.might_contain if key_filter is not None else (lambda hashes: np.zeros(len(hashes), bool))


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
    def of(cls, profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, memo: OnceEach | None = None) -> "ComputedColumn":
        row_keys = profile_row_keys(profiles, ds, cfg, memo)
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
                   column: CachedColumn, computed: ComputedColumn, key_filter: KeyFilter | None,
                   candidate_flags: dict, reference_flags: dict) -> EntryKeys:
    """Keys of the rows found in the cache (``found``: cache row, or -1) and of the ``missed`` rows
    (``computed``), as :func:`computed_entries` gives them for the whole batch. ``candidate_flags``
    (this data source's filter) and ``reference_flags`` (the column's) keep the cache chunks'
    row flags for the batches after this one (:meth:`CachedColumn.row_flags`)."""
    hit_rows = np.flatnonzero(found >= 0)
    cache_rows = found[hit_rows]
    cached_entries, cached_keys = column.counts(cache_rows)
    computed_keys = int(computed.valid.sum())
    keys = cached_keys + computed_keys

    def picked(rows: np.ndarray, keep: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries of the batch ``rows`` found in the cache and of the computed rows that are
        keys ``keep`` keeps: ``(cached entries, computed entries, their batch rows)``, each side in
        row order, a row's entries in their order."""
        cached_at, counts = column.entries(found[rows])
        kept = column.valid(cached_at) & keep(column.hashes(cached_at))
        computed_at = np.flatnonzero(computed.valid & keep(computed.hashes))
        return cached_at[kept], computed_at, np.concatenate((np.repeat(rows, counts)[kept], missed[computed.parents[computed_at]]))

    def keys_of(cached_at: np.ndarray, computed_at: np.ndarray) -> pa.ChunkedArray:
        return pa.chunked_array([take_chunked(column.keys, cached_at), computed.flat.take(pa.array(computed_at))], pa.binary())

    def candidates() -> tuple[pa.Table, np.ndarray]:
        keep = _kept(key_filter)
        flags = column.row_flags(cache_rows, candidate_flags, keep) if key_filter is not None else np.zeros(len(hit_rows), bool)
        cached_at, computed_at, rows = picked(hit_rows[flags], keep)
        order = np.argsort(rows, kind="stable")  # two sorted runs: a row is cached or computed
        table = pa.table({"key": keys_of(cached_at, computed_at).take(pa.array(order)),
                          "profile_id": pc.take(profile_ids, pa.array(rows[order]))}, schema=PROFILE_SHARD_SCHEMA)
        return table, np.concatenate((column.hashes(cached_at), computed.hashes[computed_at]))[order]

    def reference() -> pa.ChunkedArray:
        keep = reference_filter(keys)
        if keep is None:  # a small batch: every key
            cached_at, computed_at, _ = picked(hit_rows, lambda hashes: np.ones(len(hashes), bool))
        else:
            flags = column.row_flags(cache_rows, reference_flags, keep)
            cached_at, computed_at, _ = picked(hit_rows[flags], keep)
        return keys_of(cached_at, computed_at)

    return EntryKeys(keys, cached_entries - cached_keys + len(computed.valid) - computed_keys, candidates, reference)


EMPTY_COLUMN = CachedColumn(pa.chunked_array([], pa.binary()), pa.chunked_array([], pa.uint64()))
