"""The profile side of the import's join: :class:`KeyProfiles` reads a profile extract in batches
and emits each data source's ``(key, profile_id)`` rows as keyed shards (the dump side is
:mod:`transforms.join_inputs`), with or without the key cache (:mod:`transforms.key_cache`).
"""
from __future__ import annotations

import functools
from collections import deque
from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.bundle_tables import TableGatherer
from transforms.config import JobConfig
from transforms.iv_check import first_block_histogram
from transforms.join import MEMBERS_BUCKET_BY
from transforms.join_inputs import shards
from transforms.stable_hash import BucketPieces, split_for_write
from transforms.key_cache import (CacheLayout, CacheWriter, KeyCacheDirs, base_of, code_identity, load_cache, must_rewrite,
                                  not_used, row_hashes)
from transforms.key_cache_rows import EMPTY_COLUMN, ComputedColumn, computed_entries, merged_entries, shared_work
from transforms.memory import map_big_blocks, release_free_memory
from transforms.outcomes import BundleCounts, Metric, count, runner_counter
from transforms.packed_tables import PROFILE_KEYS_CODEC, PackedTable, concat_packed
from transforms.parallel import OnceEach, PooledDoFn, in_global_window, submit, windowed
from transforms.profile_reads import FileRead, ReadAhead


class KeyProfiles(PooledDoFn):
    """Read one profile extract in batches and emit, per data source, the shards of its
    ``(key, profile_id)`` rows: ``((data_source, bucket), rows)``. A small pool (``threads``) keys
    the data sources of a batch side by side (Arrow's and DuckDB's kernels release the GIL) while
    this thread reads the next batch (two batches at most in flight).

    Profile keys that no dump line of the data source can have (per the dump keys' Bloom filter,
    a side input) are dropped before the shuffle: a dump usually names a small share of the
    profile base, and the exact join only needs the candidates. A source without dump lines keeps
    none. Raw profile batches never leave this DoFn, so they never pile up in memory.

    With ``key_cache`` (:mod:`transforms.key_cache`), the keys of rows that did not change since the
    cached run are taken from the cache (read here, on the worker, once per bundle), and this
    extract's rows are written to the run's staged part, described on the ``key_cache_parts`` output.
    The cache's parts are checked while the first batches are keyed: until the check is over, up to
    MAX_UNVERIFIED batches stay in flight and none leaves (:meth:`_verified`).

    With ``profile_ids`` (a nightly that carries the previous memberships), each batch's distinct
    profile ids also leave, split as the memberships' writers split rows (``PROFILE_IDS``): the merge
    drops the previous memberships of profiles no longer in the extract
    (:func:`transforms.incremental.merge_state`).
    """

    BATCH_ROWS = 1 << 18  # profile rows read at a time: small enough that reading overlaps keying at 1M
    SMALL_BATCH_ROWS = BATCH_ROWS // 2  # a batch this small (a small file's) is keyed with others: see start_bundle
    SCREEN_ELEMENT_ROWS = 1 << 20  # profile rows whose screen rows travel as one element
    CACHE_PARTS = "key_cache_parts"
    MAX_UNVERIFIED = 4  # batches kept in flight, at most, while the cache parts' digest check is not over
    FIRST_BLOCKS = "first_blocks"  # per batch and AES-CBC data source: (data_source, histogram of its keys)
    SCREEN = "screen"  # a deterministic share of the profiles, with every scalar column: the diagnosis' screen
    PROFILE_IDS = "profile_ids"  # with profile_ids: per batch, its distinct profile ids (BucketPieces)
    SKETCHES = "extract_sketches"  # per file, the sketch of its ids and rows (transforms.extract_copies)
    READ_AHEAD = 16  # files read ahead of the one handled, at most (see process)

    def __init__(self, cfg: JobConfig, key_cache: KeyCacheDirs | None = None, profile_ids: bool = False):
        self._cfg = cfg
        self._profile_ids = profile_ids
        self._threads = cfg.threads
        self._key_cache = key_cache
        self._layout = CacheLayout.of(cfg) if key_cache is not None else None
        self._shared = shared_work(cfg)  # what a batch's data sources compute alike (often nothing: no memo then)

    def setup(self):
        super().setup()
        map_big_blocks()  # from the profile stage on, this process maps big blocks apart (see transforms.memory)
        self._rows = runner_counter("profile_rows_read")
        self._from_cache = runner_counter("profile_rows_keyed_from_cache")
        self._loaded = None  # (LoadedCache or None, code identity), read once a bundle
        self._flags: dict = {}  # per data source and per cached column: the cache chunks' row flags (merged_entries)

    def start_bundle(self):
        # An extract of many small files (Spark's 200 parts of 5,000 profiles): their batches keyed
        # together, their shards gathered, their counts summed, and with the key cache one part of
        # it a bundle (not a file). Keying a batch cost ~15 ms whatever its size (DuckDB's SHA-256
        # query, ~47 Arrow calls): 200 parts took 3.9 s to key where one file took ~1. Batches under
        # half a BATCH_ROWS are gathered: the 10M extract's 200 parts of 50,000 rows, keyed apart,
        # cost 9% more CPU than gathered five at a time.
        self._shards, self._counts = TableGatherer(concat_packed), BundleCounts()
        self._small, self._small_rows, self._filters = [], 0, None
        self._writer: CacheWriter | None = None  # with the key cache: the bundle's part of this run's cache
        self._reads: deque = deque()  # per file handed over (process): (its FileRead, filters, its start's future)
        self._ahead = ReadAhead(self.BATCH_ROWS)  # the rows those files' starts read and hold
        self._in_flight: deque = deque()  # per batch to key, in the bundle's order: its data sources' keying

    def finish_bundle(self):
        yield from map(windowed, self._files_keyed(ahead=0))
        if self._small:
            self._in_flight.append(self._batch_work(self._take_small(), self._filters))
        yield from map(windowed, self._drained(self._in_flight, self._filters))
        if self._writer is not None:
            loaded, code = self._loaded
            part = {"layout": self._layout.doc(code), **base_of(loaded), "live_rows": self._live, **self._writer.close()}
            yield beam.pvalue.TaggedOutput(self.CACHE_PARTS, in_global_window(part))
            self._writer = None
        yield from (in_global_window(shard) for shard in self._shards.drain())
        yield from self._counts.drain()
        self._loaded = None  # the cache is big: never held past the bundle that keys profiles
        self._flags = {}  # (nor the flags read from it)
        release_free_memory()

    def process(self, path: str, filters: dict, files: int = 1):
        """``files``: how many files the extract has (its screen's whole rows are shared among them).
        A file's first batches are read in the pool (:meth:`FileRead.start`), up to READ_AHEAD files
        (and BATCH_ROWS rows held: :class:`ReadAhead`) ahead of the one handled here, and a batch is keyed while the next
        files are read: Spark's 200 parts of an extract, each read in this thread (~4 ms a part: open,
        check, standardize, sketch) and each gathered batch keyed before the next part was read, took
        2.4-2.6 s of stage where one file took 1.4-1.6 s. (A reader thread of its own, not the pool's,
        raised the one-file import's peak by ~55 MB: its own malloc arena.) Batches are keyed and
        their outputs emitted in the bundle's order, the last ones by finish_bundle."""
        self._cache_writer(path)  # with the key cache: the bundle's part of it, named after its first file
        read = FileRead(path, self._cfg, files, self.BATCH_ROWS, self.SMALL_BATCH_ROWS, self._ahead)
        self._reads.append((read, filters, submit(self._pool, read.start)))
        yield from self._files_keyed(ahead=self.READ_AHEAD)

    def _files_keyed(self, ahead: int) -> Iterator:
        """The outputs of the files handed over, oldest first, until ``ahead`` are left; on a failure,
        the files read ahead are dropped."""
        try:
            while len(self._reads) > ahead or (self._reads and self._ahead.held > self.BATCH_ROWS):
                yield from self._keyed_file(*self._reads.popleft())
        except BaseException:
            for _, _, started in self._reads:
                started.cancel()
            self._reads.clear()
            raise

    def _keyed_file(self, read: "FileRead", filters: dict, started):
        """One file's batches handed to the pool (small ones gathered with the bundle's others), the
        outputs of those keyed, and the file's own outputs. Its last batch stays in flight: it is
        keyed while the next files are read."""
        started.result()  # (a file that cannot be read fails here, in the bundle's order)
        writer, in_flight, self._filters = self._writer, self._in_flight, filters
        screens: list[pa.Table] = []  # the screen rows of the batches read since the last screen element
        screened = 0  # the profile rows those batches hold
        try:
            for profiles, entries, screen in read.batches():
                self._rows.inc(profiles.num_rows)
                for n in [count(Metric.PROFILES_READ, profiles.num_rows), *entries]:
                    self._counts.add(n)
                if screen is not None:
                    screens.append(screen)
                    screened += profiles.num_rows
                    if screened >= self.SCREEN_ELEMENT_ROWS:
                        yield beam.pvalue.TaggedOutput(self.SCREEN, _emptied(screens))
                        screened = 0
                if profiles.num_rows < self.SMALL_BATCH_ROWS:  # keyed with the bundle's other small ones
                    self._small.append(profiles)
                    self._small_rows += profiles.num_rows
                    if self._small_rows < self.BATCH_ROWS:
                        continue
                    profiles = self._take_small()
                in_flight.append(self._batch_work(profiles, filters))
                # One batch is keyed while the next one is read (more until the cache's check is over).
                while len(in_flight) > 1 and self._verified(in_flight, filters, wait=len(in_flight) > self.MAX_UNVERIFIED):
                    yield from self._batch_outputs(in_flight.popleft()[0], writer)
            if screens:
                yield beam.pvalue.TaggedOutput(self.SCREEN, _emptied(screens))
            yield beam.pvalue.TaggedOutput(self.SKETCHES, read.sketcher.sketch(read.path))
        except BaseException:
            _cancel(in_flight)  # a failure: the work still pending is dropped
            raise

    def _drained(self, in_flight: deque, filters: dict) -> Iterator:
        """The outputs of every batch in flight, once the cache's check is over (an empty extract too:
        a bad cache is not carried on); on a failure, the work still pending is dropped."""
        try:
            self._verified(in_flight, filters, wait=True)
            while in_flight:
                yield from self._batch_outputs(in_flight.popleft()[0], self._writer)
        finally:
            _cancel(in_flight)

    def _batch_work(self, profiles: pa.Table, filters: dict) -> tuple[list, pa.Table | None]:
        """A batch handed to the pool: ``(its futures, the batch)``, the batch kept with the cache only
        (to key it again should the cache fail its check). Without the cache its data sources are keyed
        side by side; with it, one task: its cache lookups, then its data sources (two batches at once)."""
        if self._writer is None:
            return self._keying(profiles, filters), None
        return [submit(self._pool, self._cached_batch, profiles, filters)] + self._ids_task(profiles), profiles

    def _keying(self, profiles: pa.Table, filters: dict) -> list:
        """A batch's data sources keyed side by side in the pool (what they compute alike, once), and
        its ids task: the futures, in :meth:`_batch_outputs`' order."""
        key_source = functools.partial(self._key_source, profiles, filters, {}, self._memo())
        return [submit(self._pool, key_source, ds) for ds in self._cfg.data_sources] + self._ids_task(profiles)

    def _take_small(self) -> pa.Table:
        """The small batches held (of files read so far in the bundle) as one; none held afterwards."""
        small, self._small, self._small_rows = self._small, [], 0
        return pa.concat_tables(small, promote_options="permissive") if len(small) > 1 else small[0]

    def _verified(self, in_flight: deque, filters: dict, wait: bool) -> bool:
        """Whether keyed batches may leave: without a cache, yes; with one, once its parts' digest
        check is over (it runs while the first batches are keyed; ``wait``: wait for it) and they
        matched. A cache that fails the check is dropped and the batches in flight are keyed again
        without it: nothing read from it has left (outputs, counters, this run's part)."""
        loaded, code = self._loaded if self._loaded is not None else (None, None)
        if loaded is None:
            return True
        if not wait and not loaded.checked():
            return False
        if loaded.intact():
            return True
        not_used(self._key_cache.root, "a part differs from its manifest entry")
        self._loaded = (None, code)
        for i, (futures, profiles) in enumerate(in_flight):
            futures[0].cancel()  # the batch's keys (its profile ids, if any, owe nothing to the cache)
            in_flight[i] = ([submit(self._pool, self._cached_batch, profiles, filters), *futures[1:]], profiles)
        return True

    def _ids_task(self, profiles: pa.Table) -> list:
        """With ``profile_ids``, the batch's ids task (:func:`tonight_ids`, in the pool): its future, in a list."""
        return [submit(self._pool, tonight_ids, profiles["profile_id"], self._cfg.buckets)] if self._profile_ids else []

    def _batch_outputs(self, futures: list, writer: CacheWriter | None):
        """One batch's outputs, data source by data source (in config order, whatever the pool's);
        with the cache, its computed rows are written to this run's part first (batches in order)."""
        results = [future.result() for future in futures]
        ids = results.pop() if self._profile_ids else None
        if writer is not None:
            (rows, from_cache, part_rows), results = results[0]
            self._live += rows
            self._from_cache.inc(from_cache)
            writer.write(*part_rows)
        for ds, (counts, pieces, first_blocks) in zip(self._cfg.data_sources, results):
            for n in counts:
                self._counts.add(n)
            if first_blocks is not None:
                yield beam.pvalue.TaggedOutput(self.FIRST_BLOCKS, (ds.name, first_blocks))
            for bucket, rows in pieces:
                yield from self._shards.add(bucket, rows)
        if ids is not None:
            yield beam.pvalue.TaggedOutput(self.PROFILE_IDS, ids)
        if self._loaded is not None and self._loaded[0] is not None:
            self._loaded[0].release_pages()

    def _cache_writer(self, path: str) -> CacheWriter | None:
        """The bundle's part of this run's cache (None without the cache), made for its first file and
        named after it: the cache loaded (once a bundle) and every file's rows written there."""
        if self._key_cache is None or self._writer is not None:
            return self._writer
        if self._loaded is None:
            code = code_identity()
            self._loaded = (load_cache(self._key_cache.root, self._layout, code, wait=False), code)
        self._live = 0
        self._flags = {}
        self._writer = CacheWriter(self._key_cache.staging, path, self._layout.schema())
        return self._writer

    def _cached_batch(self, profiles: pa.Table, filters: dict):
        """One batch with the cache (runs in the pool): rows found in the cache take their cached
        keys, the others are computed. Returns ``((rows, rows from the cache, the computed rows for
        this run's part), per data source: :meth:`_key_source`'s result)``. A cache due for a
        rewrite is not read: every row is computed (and written)."""
        layout, loaded = self._layout, self._loaded[0]
        if loaded is not None and must_rewrite(loaded):
            loaded = None
        hashes, checks = row_hashes(profiles, layout.values)
        found = loaded.lookup(hashes, checks) if loaded is not None else np.full(len(hashes), -1)
        missed = np.flatnonzero(found < 0)
        sub = profiles if len(missed) == len(found) else profiles.take(pa.array(missed))
        first = {}
        for ds in self._cfg.data_sources:
            first.setdefault(layout.sources[ds.name], ds)
        memo = self._memo()  # normalization shared by cached columns that normalize a column alike
        computed = {name: ComputedColumn.of(sub, ds, self._cfg, memo) for name, ds in sorted(first.items())}
        part_columns = {k: v for name, column in computed.items() for k, v in column.part_columns(name).items()}
        columns = loaded.columns if loaded is not None else {}
        entries = {}
        for ds in self._cfg.data_sources:
            name = layout.sources[ds.name]
            entries[ds.name] = functools.partial(
                merged_entries, profiles["profile_id"], found, missed, columns.get(name, EMPTY_COLUMN), computed[name],
                filters.get(ds.name), self._flags.setdefault(("candidates", ds.name), {}),
                self._flags.setdefault(("reference", name), {}))
        results = [self._key_source(profiles, filters, entries, None, ds) for ds in self._cfg.data_sources]
        return (len(found), len(found) - len(missed), (hashes[missed], checks[missed], part_columns)), results

    def _memo(self) -> OnceEach | None:
        """A batch's memo of what its data sources compute alike, or None when they compute nothing alike."""
        return OnceEach(self._shared) if self._shared else None

    def _key_source(self, profiles: pa.Table, filters: dict, entries: dict, memo: OnceEach | None, ds):
        """One data source's keys of a profile batch, Bloom-filtered and sharded, and the histogram
        of their first blocks for AES-CBC data sources (else None). Runs in the pool; ``memo``: the
        batch's, shared by its data sources (:func:`~transforms.key_cache_rows.computed_entries`)."""
        keys = (entries[ds.name]() if ds.name in entries
                else computed_entries(profiles, ds, self._cfg, filters.get(ds.name), memo))
        candidates, hashes = keys.candidates()
        counts = [
            count(Metric.PROFILE_KEYS, keys.keys, ds.name),
            count(Metric.PROFILE_KEYS_SHUFFLED, candidates.num_rows, ds.name),
            count(Metric.PROFILE_VALUES_WITHOUT_KEY, keys.without_key, ds.name),
        ]
        # packed here, in the pool (transforms.packed_tables): the join's side input, held by the runner to the end
        pieces = [((ds.name, bucket), PackedTable.pack(rows, PROFILE_KEYS_CODEC))
                  for bucket, rows in shards(candidates, hashes, self._cfg.buckets)]
        # The IV check's reference: what the data source's decrypted, normalized IDs should look like.
        if not (ds.decrypts and ds.encryption.algorithm == "aes-cbc"):
            return counts, pieces, None
        return counts, pieces, first_block_histogram(keys.reference())


def tonight_ids(ids: pa.ChunkedArray, buckets: int) -> BucketPieces:
    """A batch's distinct profile ids (the text the memberships hold), split as the memberships'
    writers split rows. The unique is most of the cost (~50 ms of ~80 ms a 256k batch); it keeps an
    extract with several rows per profile from sending its ids several times."""
    table = pa.table({MEMBERS_BUCKET_BY: pc.unique(ids).cast(pa.string())})
    return split_for_write(table, MEMBERS_BUCKET_BY, buckets)


def _cancel(in_flight: deque) -> None:
    """The work of the batches still in flight dropped (none once they are drained)."""
    for futures, _ in in_flight:
        for future in futures:
            future.cancel()


def _emptied(tables: list[pa.Table]) -> pa.Table:
    """The gathered tables as one (one screen element: the screen's steps work per element, so
    their number follows the file's size, not the batch size), and the list emptied."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    tables.clear()
    return table
