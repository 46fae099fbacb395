"""The two sides of the import's join, as keyed shards: dump lines (:class:`ReadDumpFile`, here) and
profile keys (:class:`~transforms.key_profiles.KeyProfiles`), each split into ``buckets`` shards by a
stable hash of the join key (:func:`shards`).

Elements are Arrow tables, never rows: a DoFn receives a file and emits whole tables, so the
per-record work happens in Arrow/numpy kernels. A Bloom filter of the dump keys
(:class:`BuildKeyFilter`, a side input) drops the profile keys no line can match before anything is
shuffled.
"""
from __future__ import annotations

import functools
import itertools
from datetime import datetime
from typing import Iterator, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import compact_dictionaries, split_by_bucket
from transforms.bundle_tables import TableGatherer, concat_hashes, concat_tables
from transforms.config import JobConfig
from transforms.control_files import control_files_in
from transforms.crypto import build_decryptor
from transforms.diagnosis_sample import rejected_candidates
from transforms.dump_files import CHUNK_BYTES, FileStats
from transforms.dump_listing import dump_paths
from transforms.dump_names import missing_splits, sync_mode_of
from transforms.dumps import numbered_chunks, parse_chunk, parse_chunks
from transforms.errors import InputError
from transforms.incremental import unnamed_dump_error
from transforms.keys import DumpKeys, dump_keys
from transforms.memory import release_free_memory
from transforms.outcomes import COUNTS, DECRYPT_FAILURES, BundleCounts, Metric, count, runner_counter
from transforms.packed_tables import PackedTable, concat_packed
from transforms.parallel import BundleQueue, PooledDoFn, in_global_window
from transforms.stable_hash import KeyFilter, buckets_from_hash, hash64
from transforms.storage import literal, matched


class ExpandPatterns(beam.DoFn):
    """``(data_source, glob)`` -> ``(data_source, path)`` for each dump file; an empty match fails.
    The ``.info`` control files in the dumps' folders go to the ``control`` output, with the glob."""

    CONTROL = "control"

    def process(self, element):
        name, pattern = element
        paths = dump_paths(pattern)
        if not paths:
            raise InputError(pattern, f"no segment dump matches (data source '{name}')")
        for path, problem in missing_splits(paths):  # as the preflight found, unless files moved since
            raise InputError(path, problem)
        for path in paths:
            yield name, path
        folders = sorted({p.rsplit("/", 1)[0] for p in paths})
        for folder in folders:
            for control in control_files_in(literal(folder)):
                yield beam.pvalue.TaggedOutput(self.CONTROL, (control, pattern))


SMALL_FILE_BYTES = CHUNK_BYTES // 4  # a dump whose text is one chunk under this is keyed with others (ReadDumpFile)


def shards(keyed: pa.Table, hashes: np.ndarray, buckets: int) -> list[tuple[int, pa.Table]]:
    """``(bucket, rows)`` for each non-empty shard of a one-source keyed table; a dictionary column
    (a dump's segment sets) keeps only the values of its shard's rows."""
    if not keyed.num_rows:
        return []
    return [(bucket, compact_dictionaries(rows)) for bucket, rows in split_by_bucket(keyed, buckets_from_hash(hashes, buckets))]


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
        if self._split_bytes is None or _stored_size(path) < self._split_bytes:
            yield DumpWork(name, path)
            return
        stats = FileStats()
        for chunk, first_line in numbered_chunks(path, stats=stats):
            self._chunks.inc()
            yield DumpWork(name, path, chunk, first_line)
        self._files.inc()
        yield beam.pvalue.TaggedOutput(ReadDumpFile.FILE_STATS, (path, stats))


def _stored_size(path: str) -> int:
    """A listed dump's stored size; a dump gone since it was listed fails naming it."""
    found = matched(literal(path))
    if not found:
        raise InputError(path, "listed, then gone before it was read (removed or renamed during the run?)")
    return found[0].size_in_bytes


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
        self._together = runner_counter("small_dumps_keyed_together")
        self._decryptors = {ds.name: build_decryptor(ds, self._run_date) for ds in self._cfg.data_sources}

    def start_bundle(self):
        self._queue = BundleQueue(self._pool, self._threads, self._emit)
        # A small dump's tables (its shards packed) are gathered over the bundle (transforms.bundle_tables), its counts summed.
        self._shards, self._rejected = TableGatherer(concat_packed), TableGatherer(concat_tables)
        self._hashes, self._counts = TableGatherer(concat_hashes), BundleCounts()
        self._small: dict[tuple[str, bool], list[tuple[bytes, int, str]]] = {}  # small files' text, keyed together
        self._small_bytes: dict[tuple[str, bool], int] = {}  # the text each key holds

    def finish_bundle(self):
        for (name, removals), jobs in self._small.items():
            self._queue.enqueue(self._key_files, name, removals, jobs)
        self._small, self._small_bytes = {}, {}
        yield from self._queue.drain()
        yield from (in_global_window(shard) for shard in self._shards.drain())
        yield from (beam.pvalue.TaggedOutput(self.REJECTED, in_global_window(table)) for _, table in self._rejected.drain())
        yield from (beam.pvalue.TaggedOutput(self.KEY_HASHES, in_global_window(hashes)) for hashes in self._hashes.drain())
        yield from self._counts.drain()
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
        chunks = numbered_chunks(work.path, stats=stats)
        head = list(itertools.islice(chunks, 2))  # a file of one small chunk is keyed with others
        if len(head) == 1 and len(head[0][0]) < SMALL_FILE_BYTES:
            yield from self._key_small(work.name, self._incremental and mode == "iter", (*head.pop(), work.path))
        for job in itertools.chain(head, chunks):
            yield from self._queue.submit(key_chunk, job)
        self._files.inc()
        yield beam.pvalue.TaggedOutput(self.FILE_STATS, (work.path, stats))

    def _key_small(self, name: str, removals: bool, job: tuple[bytes, int, str]) -> Iterator:
        """A small file's text, keyed with other small files' of its data source once they hold
        CHUNK_BYTES (or at the bundle's end, or once all data sources' hold two chunks): a batch
        split in hundreds of files of a few thousand lines had parsing, keying and sharding's fixed
        costs once per file."""
        key = (name, removals)
        self._small.setdefault(key, []).append(job)
        self._small_bytes[key] = self._small_bytes.get(key, 0) + len(job[0])
        self._together.inc()
        if self._small_bytes[key] >= CHUNK_BYTES:
            yield from self._key_held(key)
        # Over all data sources at most two chunks are held (one each was 8 MiB a data source: 1 GB
        # with 129 of them), the one holding the most keyed first.
        while sum(self._small_bytes.values()) >= 2 * CHUNK_BYTES:
            yield from self._key_held(max(self._small_bytes, key=self._small_bytes.__getitem__))

    def _key_held(self, key: tuple[str, bool]) -> Iterator:
        jobs = self._small.pop(key)
        del self._small_bytes[key]
        yield from self._queue.submit(self._key_files, *key, jobs)

    def _key_files(self, name: str, removals: bool, jobs: list[tuple[bytes, int, str]]) -> tuple[int, list]:
        """:meth:`_key_chunk` for the text of several small files at once."""
        ds = self._cfg.data_source(name)
        return self._key_parsed(name, None, ds, removals, *parse_chunks(jobs, ds, removals))

    def _emit(self, result: tuple[int, list]) -> list:
        lines, outputs = result
        self._received.inc(lines)
        ready = []
        for out in outputs:
            tag = out.tag if isinstance(out, beam.pvalue.TaggedOutput) else None
            if tag is None:  # ((data_source, bucket), keyed lines)
                ready += self._shards.add(*out)
            elif tag == COUNTS:
                self._counts.add(out.value)
            elif tag == self.REJECTED:
                ready += [beam.pvalue.TaggedOutput(tag, table) for _, table in self._rejected.add(None, out.value)]
            elif tag == self.KEY_HASHES:
                ready += [beam.pvalue.TaggedOutput(tag, hashes) for hashes in self._hashes.add(*out.value)]
            else:
                ready.append(out)
        return ready

    def _key_chunk(self, name: str, path: str, ds, removals: bool, job: tuple[bytes, int]) -> tuple[int, list]:
        """One chunk -> (its lines, its outputs: counts, rejected tables, key hashes, IV histogram,
        the diagnosis' rejected-ID candidates, shards). Runs in the pool."""
        return self._key_parsed(name, path, ds, removals, *parse_chunk(*job, path, ds, removals))

    def _key_parsed(self, name: str, path: str | None, ds, removals: bool, parsed: pa.Table, rejected: pa.Table,
                    lines: int) -> tuple[int, list]:
        """The outputs of :meth:`_key_chunk` from a parsed chunk (``path`` None: lines of several files)."""
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
        if ds.decrypts:
            outputs.extend(beam.pvalue.TaggedOutput(COUNTS, c) for c in decryption_by_file(name, keys))
        k = self._cfg.sample_size(ds)
        sampled = rejected_candidates(parsed, keys.rejected, k, path)
        if sampled is not None:
            outputs.append(beam.pvalue.TaggedOutput(self.DIAGNOSABLE, (name, (k, sampled))))
        if keys.keyed.num_rows:
            hashes = hash64(keys.keyed["key"])
            outputs.append(beam.pvalue.TaggedOutput(self.KEY_HASHES, (name, hashes)))
            # packed here, in the pool (transforms.packed_tables): the join's stage gets them as one byte stream
            outputs.extend(((name, bucket), PackedTable.pack(rows))
                           for bucket, rows in shards(keys.keyed, hashes, self._cfg.buckets))
        return lines, outputs


def decryption_by_file(name: str, keys: DumpKeys) -> list:
    """A decrypting data source's counts per dump file of the lines keyed: its IDs that decrypted to an
    address (``FILE_DECRYPTED``) and those rejected with one of ``DECRYPT_FAILURES``
    (``FILE_DECRYPT_FAILED``), the detail its path. A dump none of whose IDs decrypts beside dumps that
    do fails the run (:func:`transforms.report.check_report`): a delivery under another key."""
    rejected = keys.rejected
    failed = rejected.filter(pc.is_in(rejected["reason"].cast(pa.string()), pa.array([str(r) for r in DECRYPT_FAILURES])))
    return [count(metric, n, name, path)
            for metric, files in ((Metric.FILE_DECRYPTED, keys.keyed["source_file"]),
                                  (Metric.FILE_DECRYPT_FAILED, failed["source_file"]))
            for path, n in _per_value(files)]


def _per_value(values: pa.Array | pa.ChunkedArray) -> list[tuple[str, int]]:
    """``(value, rows holding it)`` for a column of names (dictionary-encoded or not), none at 0."""
    if not len(values):
        return []
    counted = pc.value_counts(values)
    return [(v, n) for v, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()) if v is not None]


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
