"""The two sides of the import's join, as keyed shards: dump lines (:class:`ReadDumpFile`) and profile
keys (:class:`KeyProfiles`), each split into ``buckets`` shards by a stable hash of the join key.

Elements are Arrow tables, never rows: a DoFn receives a file and emits whole tables, so the
per-record work happens in Arrow/numpy kernels. A Bloom filter of the dump keys
(:class:`BuildKeyFilter`, a side input) drops the profile keys no line can match before anything is
shuffled.
"""
from __future__ import annotations

import functools
from collections import deque
from datetime import datetime
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import KeyFilter, buckets_from_hash, hash64, split_by_bucket
from transforms.config import JobConfig
from transforms.diagnosis_forms import screen_columns, screen_rows
from transforms.diagnosis_sample import rejected_candidates
from transforms.dump_files import FileStats, dump_paths
from transforms.dumps import numbered_chunks, parse_chunk
from transforms.errors import InputError
from transforms.iv_check import first_block_histogram
from transforms.crypto import build_decryptor
from transforms.incremental import sync_mode_of, unnamed_dump_error
from transforms.key_cache import (CacheLayout, CacheWriter, KeyCacheDirs, code_identity, load_cache, must_rewrite, not_used,
                                  row_hashes)
from transforms.key_cache_rows import EMPTY_COLUMN, ComputedColumn, computed_entries, merged_entries, shared_work
from transforms.keys import dump_keys
from transforms.memory import map_big_blocks, release_free_memory
from transforms.outcomes import COUNTS, Metric, count, runner_counter
from transforms.parallel import BundleQueue, OnceEach, PooledDoFn, submit
from transforms.profiles import read_profiles
from transforms.storage import glob


class ExpandPatterns(beam.DoFn):
    """``(data_source, glob)`` -> ``(data_source, path)`` for each dump file; an empty match fails.
    The ``.info`` control files in the dumps' folders go to the ``control`` output."""

    CONTROL = "control"

    def process(self, element):
        name, pattern = element
        paths = dump_paths(pattern)
        if not paths:
            raise InputError(pattern, f"no segment dump matches (data source '{name}')")
        for path in paths:
            yield name, path
        folders = sorted({p.rsplit("/", 1)[0] for p in paths})
        for folder in folders:
            for control in glob(f"{folder}/*.info"):
                yield beam.pvalue.TaggedOutput(self.CONTROL, control)


def shards(keyed: pa.Table, hashes: np.ndarray, buckets: int) -> list[tuple[int, pa.Table]]:
    """``(bucket, rows)`` for each non-empty shard of a one-source keyed table."""
    return list(split_by_bucket(keyed, buckets_from_hash(hashes, buckets))) if keyed.num_rows else []


class DumpWork(NamedTuple):
    """What ReadDumps keys: a whole dump file (``chunk`` None: read where it is keyed), or one
    decompressed chunk of a big one (:class:`SplitBigDumps`) and the number of its first line."""

    name: str
    path: str
    chunk: bytes | None = None
    first_line: int = 1


class SplitBigDumps(beam.DoFn):
    """``(data_source, path)`` -> :class:`DumpWork`. A dump stored in ``split_bytes`` or more is read
    here, from start to end (gzip is not splittable), and goes on as its decompressed chunks, which
    a Reshuffle spreads over the workers: parsing, decryption, normalization and sharding of one
    file then run in parallel. Its stats (lines, size, md5: what a control file promises) are
    taken here, once. A smaller file goes on whole and is read where it is keyed (no text shipped).
    Line numbers come from the file, so the outputs do not depend on the cut."""

    def __init__(self, split_bytes: int | None):
        self._split_bytes = split_bytes

    def setup(self):
        self._files = runner_counter("dump_files_read")
        self._chunks = runner_counter("dump_chunks_spread")

    def process(self, element):
        name, path = element
        if self._split_bytes is None or FileSystems.match([path])[0].metadata_list[0].size_in_bytes < self._split_bytes:
            yield DumpWork(name, path)
            return
        stats = FileStats()
        for chunk, first_line in numbered_chunks(path, stats=stats):
            self._chunks.inc()
            yield DumpWork(name, path, chunk, first_line)
        self._files.inc()
        yield beam.pvalue.TaggedOutput(ReadDumpFile.FILE_STATS, (path, stats))


class ReadDumpFile(PooledDoFn):
    """Key dump lines and shard them by key: a whole file (read here in chunks) or one chunk of a
    big file (:class:`DumpWork`). Emits ``((data_source, bucket), keyed lines)``, rejected tables,
    counts, the key hashes of each chunk (for the Bloom filter), the IV check's histograms, and a
    whole file's stats (for its control file).

    Reading, keying and sharding stay in one DoFn so a chunk's intermediate tables never pile up
    in runners that do not fuse steps. While this thread decompresses the next chunk (of this file
    or the next one), a small pool (``threads``) parses, decrypts and shards the previous ones, at
    most ``threads`` + 1 chunks in flight per bundle; the chunks of big files a bundle brings are
    keyed in the same pool. Ciphers and the pool are built in setup(), from key
    references."""

    REJECTED = "rejected"
    KEY_HASHES = "key_hashes"  # per chunk: (data_source, 64-bit hashes of its keys)
    FILE_STATS = "file_stats"  # per file: (path, FileStats)
    FIRST_BLOCKS = "first_blocks"  # per chunk of an AES-CBC data source: (data_source, FirstBlocks)
    DIAGNOSABLE = "diagnosable"  # per chunk: (data_source, (sample size, rejected-ID candidates)) for the diagnosis

    def __init__(self, cfg: JobConfig, run_date: datetime | None, incremental: bool = False):
        self._cfg = cfg
        self._run_date = run_date
        self._incremental = incremental
        self._threads = cfg.threads

    def setup(self):
        super().setup()
        self._received = runner_counter("dump_lines_read")
        self._files = runner_counter("dump_files_read")
        self._decryptors = {ds.name: build_decryptor(ds, self._run_date) for ds in self._cfg.data_sources}

    def start_bundle(self):
        self._queue = BundleQueue(self._pool, self._threads, self._emit)

    def finish_bundle(self):
        yield from self._queue.drain()
        release_free_memory()

    def process(self, element):
        work = element if isinstance(element, DumpWork) else DumpWork(*element)
        ds = self._cfg.data_source(work.name)
        mode = sync_mode_of(ds, work.path)
        if self._incremental and mode is None:  # preflight checks this; a file may arrive since
            raise unnamed_dump_error(self._cfg, work.name, work.path)
        key_chunk = functools.partial(self._key_chunk, work.name, work.path, ds, self._incremental and mode == "iter")
        if work.chunk is not None:
            yield from self._queue.submit(key_chunk, (work.chunk, work.first_line))
            return
        # The bundle's queue spans files: a file's chunks are keyed while the next file is read
        # (most files are one chunk, so a queue per file kept one core busy).
        stats = FileStats()
        for job in numbered_chunks(work.path, stats=stats):
            yield from self._queue.submit(key_chunk, job)
        self._files.inc()
        yield beam.pvalue.TaggedOutput(self.FILE_STATS, (work.path, stats))

    def _emit(self, result: tuple[int, list]) -> list:
        lines, outputs = result
        self._received.inc(lines)
        return outputs

    def _key_chunk(self, name: str, path: str, ds, removals: bool, job: tuple[bytes, int]) -> tuple[int, list]:
        """One chunk -> (its lines, its outputs: counts, rejected tables, key hashes, IV histogram,
        the diagnosis' rejected-ID candidates, shards). Runs in the pool."""
        parsed, rejected, lines = parse_chunk(*job, path, ds, removals)
        outputs = [beam.pvalue.TaggedOutput(COUNTS, count(Metric.RECEIVED, lines, name))]
        if rejected.num_rows:
            outputs.append(beam.pvalue.TaggedOutput(self.REJECTED, rejected))
        if not parsed.num_rows:
            return lines, outputs
        if not removals:  # full dumps: removed lists are ignored
            parsed = parsed.set_column(parsed.schema.get_field_index("removed"), "removed", _empty_lists(parsed.num_rows))
        keys = dump_keys(parsed, ds, self._decryptors[ds.name], self._cfg.region_for(ds))
        if keys.rejected.num_rows:
            outputs.append(beam.pvalue.TaggedOutput(self.REJECTED, keys.rejected))
        if keys.first_blocks is not None:
            outputs.append(beam.pvalue.TaggedOutput(self.FIRST_BLOCKS, (name, keys.first_blocks)))
        k = self._cfg.sample_size(ds)
        sampled = rejected_candidates(parsed, keys.rejected, k)
        if sampled is not None:
            outputs.append(beam.pvalue.TaggedOutput(self.DIAGNOSABLE, (name, (k, sampled))))
        if keys.keyed.num_rows:
            hashes = hash64(keys.keyed["key"])
            outputs.append(beam.pvalue.TaggedOutput(self.KEY_HASHES, (name, hashes)))
            outputs.extend(((name, bucket), rows) for bucket, rows in shards(keys.keyed, hashes, self._cfg.buckets))
        return lines, outputs


def _emptied(tables: list[pa.Table]) -> pa.Table:
    """The gathered tables as one (one screen element: the screen's steps work per element, so
    their number follows the file's size, not the batch size), and the list emptied."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    tables.clear()
    return table


def _empty_lists(n: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))


class BuildKeyFilter(beam.CombineFn):
    """A Bloom filter of 64-bit key hashes (numpy arrays in; a few bytes per key): per data source
    for the dump lines' keys, globally for an export's target ids."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, hashes: np.ndarray):
        acc.append(hashes)
        return acc

    def merge_accumulators(self, accs):
        merged = [a for acc in accs for a in acc]
        return [np.concatenate(merged)] if merged else []

    def extract_output(self, acc):
        return KeyFilter(np.concatenate(acc) if acc else np.zeros(0, np.uint64))


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
    """

    BATCH_ROWS = 1 << 18  # profile rows read at a time: small enough that reading overlaps keying at 1M
    SCREEN_ELEMENT_ROWS = 1 << 20  # profile rows whose screen rows travel as one element
    CACHE_PARTS = "key_cache_parts"
    MAX_UNVERIFIED = 4  # batches kept in flight, at most, while the cache parts' digest check is not over
    FIRST_BLOCKS = "first_blocks"  # per batch and AES-CBC data source: (data_source, histogram of its keys)
    SCREEN = "screen"  # a deterministic share of the profiles, with every scalar column: the diagnosis' screen

    def __init__(self, cfg: JobConfig, key_cache: KeyCacheDirs | None = None):
        self._cfg = cfg
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

    def finish_bundle(self):
        self._loaded = None  # the cache is big: never held past the bundle that keys profiles
        self._flags = {}  # (nor the flags read from it)
        release_free_memory()

    def process(self, path: str, filters: dict):
        cfg = self._cfg
        writer = self._cache_writer(path)
        diagnosis, first_row = any(cfg.sample_size(ds) for ds in cfg.data_sources), 0
        in_flight: deque = deque()  # per batch read: its data sources' keying, in the pool
        screens: list[pa.Table] = []  # the screen rows of the batches read since the last screen element
        screened = 0  # the profile rows those batches hold
        try:
            for profiles in read_profiles(path, cfg, batch_rows=self.BATCH_ROWS,
                                          extra=screen_columns(cfg, path) if diagnosis else ()):
                self._rows.inc(profiles.num_rows)
                yield beam.pvalue.TaggedOutput(COUNTS, count(Metric.PROFILES_READ, profiles.num_rows))
                if diagnosis:
                    screens.append(screen_rows(profiles, first_row))
                    first_row += profiles.num_rows
                    screened += profiles.num_rows
                    if screened >= self.SCREEN_ELEMENT_ROWS:
                        yield beam.pvalue.TaggedOutput(self.SCREEN, _emptied(screens))
                        screened = 0
                if writer is None:  # the batch's data sources keyed side by side (what they compute alike, once)
                    key_source = functools.partial(self._key_source, profiles, filters, {}, self._memo())
                    in_flight.append(([submit(self._pool, key_source, ds) for ds in cfg.data_sources], None))
                else:  # one task a batch: its cache lookups, then its data sources (two batches at once)
                    in_flight.append(([submit(self._pool, self._cached_batch, profiles, filters)], profiles))
                # One batch is keyed while the next one is read (more until the cache's check is over).
                while len(in_flight) > 1 and self._verified(in_flight, filters, wait=len(in_flight) > self.MAX_UNVERIFIED):
                    yield from self._batch_outputs(in_flight.popleft()[0], writer)
            self._verified(in_flight, filters, wait=True)  # (an empty extract too: a bad cache is not carried on)
            while in_flight:
                yield from self._batch_outputs(in_flight.popleft()[0], writer)
            if screens:
                yield beam.pvalue.TaggedOutput(self.SCREEN, _emptied(screens))
        finally:
            for futures, _ in in_flight:  # a failure: the work still pending is dropped
                for future in futures:
                    future.cancel()
        if writer is not None:
            loaded, code = self._loaded
            base = loaded.manifest["parts"] if loaded is not None and not must_rewrite(loaded) else []
            yield beam.pvalue.TaggedOutput(self.CACHE_PARTS, {"layout": self._layout.doc(code), "base": base,
                                                              "live_rows": self._live, **writer.close()})

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
            for future in futures:
                future.cancel()
            in_flight[i] = ([submit(self._pool, self._cached_batch, profiles, filters)], profiles)
        return True

    def _batch_outputs(self, futures: list, writer: CacheWriter | None):
        """One batch's outputs, data source by data source (in config order, whatever the pool's);
        with the cache, its computed rows are written to this run's part first (batches in order)."""
        results = [future.result() for future in futures]
        if writer is not None:
            (rows, from_cache, part_rows), results = results[0]
            self._live += rows
            self._from_cache.inc(from_cache)
            writer.write(*part_rows)
        for ds, (counts, pieces, first_blocks) in zip(self._cfg.data_sources, results):
            for n in counts:
                yield beam.pvalue.TaggedOutput(COUNTS, n)
            if first_blocks is not None:
                yield beam.pvalue.TaggedOutput(self.FIRST_BLOCKS, (ds.name, first_blocks))
            for bucket, rows in pieces:
                yield bucket, rows
        if self._loaded is not None and self._loaded[0] is not None:
            self._loaded[0].release_pages()

    def _cache_writer(self, path: str) -> CacheWriter | None:
        if self._key_cache is None:
            return None
        if self._loaded is None:
            code = code_identity()
            self._loaded = (load_cache(self._key_cache.root, self._layout, code, wait=False), code)
        self._live = 0
        self._flags = {}
        return CacheWriter(self._key_cache.staging, path, self._layout.schema())

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
        pieces = [((ds.name, bucket), rows) for bucket, rows in shards(candidates, hashes, self._cfg.buckets)]
        # The IV check's reference: what the data source's decrypted, normalized IDs should look like.
        if not (ds.decrypts and ds.encryption.algorithm == "aes-cbc"):
            return counts, pieces, None
        return counts, pieces, first_block_histogram(keys.reference())
