"""The two sides of the import's join, as keyed shards: dump lines (:class:`ReadDumpFile`) and profile
keys (:class:`KeyProfiles`), each split into ``buckets`` shards by a stable hash of the join key.

Elements are Arrow tables, never rows: a DoFn receives a file and emits whole tables, so the
per-record work happens in Arrow/numpy kernels. A Bloom filter of the dump keys
(:class:`BuildKeyFilter`, a side input) drops the profile keys no line can match before anything is
shuffled.
"""
from __future__ import annotations

import functools
from datetime import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.arrow_utils import KeyFilter, buckets_from_hash, hash64, split_by_bucket
from transforms.config import JobConfig
from transforms.diagnosis_forms import screen_columns, screen_rows
from transforms.diagnosis_sample import rejected_candidates
from transforms.dump_files import FileStats, is_dump_file
from transforms.dumps import numbered_chunks, parse_chunk
from transforms.errors import InputError
from transforms.iv_check import first_block_histogram
from transforms.crypto import build_decryptor
from transforms.incremental import sync_mode_of, unnamed_dump_error
from transforms.keys import dump_keys, profile_keys
from transforms.memory import release_free_memory
from transforms.outcomes import COUNTS, Metric, count, runner_counter
from transforms.parallel import PooledDoFn, ordered_map
from transforms.profiles import read_profiles
from transforms.storage import glob


class ExpandPatterns(beam.DoFn):
    """``(data_source, glob)`` -> ``(data_source, path)`` for each dump file; an empty match fails.
    The ``.info`` control files in the dumps' folders go to the ``control`` output."""

    CONTROL = "control"

    def process(self, element):
        name, pattern = element
        paths = [p for p in glob(pattern) if is_dump_file(p)]
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


class ReadDumpFile(PooledDoFn):
    """Read one dump file in chunks, key its lines and shard them by key: emits
    ``((data_source, bucket), keyed lines)``, rejected tables, counts, the key hashes of each chunk
    (for the Bloom filter) and the file's stats (for its control file).

    Reading, keying and sharding stay in one DoFn so a chunk's intermediate tables never pile up
    in runners that do not fuse steps. While this thread decompresses the next chunk, a small pool
    (``threads``) parses, decrypts and shards the previous ones; results are emitted in file order.
    Ciphers and the pool are built in setup(), from key references."""

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

    def finish_bundle(self):
        release_free_memory()

    def process(self, element):
        name, path = element
        ds = self._cfg.data_source(name)
        stats = FileStats()
        mode = sync_mode_of(ds, path)
        if self._incremental and mode is None:  # preflight checks this; a file may arrive since
            raise unnamed_dump_error(self._cfg, name, path)
        removals = self._incremental and mode == "iter"
        key_chunk = functools.partial(self._key_chunk, path, ds, removals)
        chunks = numbered_chunks(path, stats=stats)
        for lines, rejected, hashes, pieces, first_blocks, sampled in ordered_map(key_chunk, chunks, self._pool,
                                                                                 ahead=self._cfg.threads):
            self._received.inc(lines)
            yield beam.pvalue.TaggedOutput(COUNTS, count(Metric.RECEIVED, lines, name))
            if sampled is not None:
                yield beam.pvalue.TaggedOutput(self.DIAGNOSABLE, (name, (self._cfg.sample_size(ds), sampled)))
            for table in rejected:
                yield beam.pvalue.TaggedOutput(self.REJECTED, table)
            if hashes is not None:
                yield beam.pvalue.TaggedOutput(self.KEY_HASHES, (name, hashes))
            if first_blocks is not None:
                yield beam.pvalue.TaggedOutput(self.FIRST_BLOCKS, (name, first_blocks))
            for bucket, rows in pieces:
                yield (name, bucket), rows
        self._files.inc()
        yield beam.pvalue.TaggedOutput(self.FILE_STATS, (path, stats))

    def _key_chunk(self, path: str, ds, removals: bool, job: tuple[bytes, int]):
        """One chunk -> (lines, rejected tables, key hashes or None, shards, FirstBlocks or None,
        rejected-ID candidates for the diagnosis or None). Runs in the pool."""
        parsed, rejected, lines = parse_chunk(*job, path, ds, removals)
        if not parsed.num_rows:
            return lines, [rejected] if rejected.num_rows else [], None, [], None, None
        if not removals:  # full dumps: removed lists are ignored
            parsed = parsed.set_column(parsed.schema.get_field_index("removed"), "removed", _empty_lists(parsed.num_rows))
        keys = dump_keys(parsed, ds, self._decryptors[ds.name], self._cfg.region_for(ds))
        hashes = hash64(keys.keyed["key"]) if keys.keyed.num_rows else None
        pieces = shards(keys.keyed, hashes, self._cfg.buckets) if hashes is not None else []
        sampled = rejected_candidates(parsed, keys.rejected, self._cfg.sample_size(ds))
        rejected_tables = [t for t in (rejected, keys.rejected) if t.num_rows]
        return lines, rejected_tables, hashes, pieces, keys.first_blocks, sampled


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
    the data sources of a batch side by side (Arrow's and DuckDB's kernels release the GIL).

    Profile keys that no dump line of the data source can have (per the dump keys' Bloom filter,
    a side input) are dropped before the shuffle: a dump usually names a small share of the
    profile base, and the exact join only needs the candidates. A source without dump lines keeps
    none. Raw profile batches never leave this DoFn, so they never pile up in memory.
    """

    FIRST_BLOCKS = "first_blocks"  # per batch and AES-CBC data source: (data_source, histogram of its keys)
    SCREEN = "screen"  # a deterministic share of the profiles, with every scalar column: the diagnosis' screen

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg
        self._threads = cfg.threads

    def setup(self):
        super().setup()
        self._rows = runner_counter("profile_rows_read")

    def finish_bundle(self):
        release_free_memory()

    def process(self, path: str, filters: dict):
        cfg = self._cfg
        diagnosis, first_row = any(cfg.sample_size(ds) for ds in cfg.data_sources), 0
        for profiles in read_profiles(path, cfg, extra=screen_columns(cfg, path) if diagnosis else ()):
            self._rows.inc(profiles.num_rows)
            yield beam.pvalue.TaggedOutput(COUNTS, count(Metric.PROFILES_READ, profiles.num_rows))
            if diagnosis:
                yield beam.pvalue.TaggedOutput(self.SCREEN, screen_rows(profiles, first_row))
                first_row += profiles.num_rows
            key_source = functools.partial(self._key_source, profiles, filters)
            sources = cfg.data_sources
            for ds, (counts, pieces, first_blocks) in zip(sources, ordered_map(key_source, sources, self._pool,
                                                                              ahead=len(sources))):
                for n in counts:
                    yield beam.pvalue.TaggedOutput(COUNTS, n)
                if first_blocks is not None:
                    yield beam.pvalue.TaggedOutput(self.FIRST_BLOCKS, (ds.name, first_blocks))
                for bucket, rows in pieces:
                    yield bucket, rows

    def _key_source(self, profiles: pa.Table, filters: dict, ds):
        """One data source's keys of a profile batch, Bloom-filtered and sharded, and the histogram
        of their first blocks for AES-CBC data sources (else None). Runs in the pool."""
        keyed, without_key = profile_keys(profiles, ds, self._cfg, binary=True)
        hashes = hash64(keyed["key"])
        key_filter = filters.get(ds.name)
        keep = key_filter.might_contain(hashes) if key_filter is not None else np.zeros(len(hashes), bool)
        candidates = keyed.filter(pa.array(keep))
        counts = [
            count(Metric.PROFILE_KEYS, keyed.num_rows, ds.name),
            count(Metric.PROFILE_KEYS_SHUFFLED, candidates.num_rows, ds.name),
            count(Metric.PROFILE_VALUES_WITHOUT_KEY, without_key, ds.name),
        ]
        pieces = [((ds.name, bucket), rows) for bucket, rows in shards(candidates, hashes[keep], self._cfg.buckets)]
        # The IV check's reference: what the data source's decrypted, normalized IDs should look like.
        cbc = ds.decrypts and ds.encryption.algorithm == "aes-cbc"
        return counts, pieces, first_block_histogram(keyed["key"]) if cbc else None
