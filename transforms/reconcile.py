"""The import's core: read dumps and profiles, key both sides, join them bucket by bucket.

Elements are Arrow tables, never rows: a DoFn receives and emits whole tables, so the per-record
work happens in Arrow/numpy kernels. Both sides are split into ``cfg.buckets`` shards by a stable
hash of the join key; a ``GroupByKey`` on ``(data_source, bucket)`` gathers a shard's dump lines,
which meet that shard's profile keys (a multimap side input, see :class:`JoinShard`) in Arrow's
hash join. On Dataflow/Flink the shards spread over workers.

Every dump line ends in exactly one place: a membership (``reconciled``), the file audience, or a
rejection with a reason. Counts travel as ``((data_source, counter), n)`` pairs on the ``counts``
output and are summed once at the end (see :mod:`transforms.report`).
"""
from __future__ import annotations

import functools
import typing
from datetime import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.arrow_utils import KeyFilter, buckets_from_hash, concat, constant, distinct, explode_list, hash64, split_by_bucket
from transforms.config import JobConfig
from transforms.dumps import (
    FileStats,
    check_against_control,
    is_dump_file,
    numbered_chunks,
    parse_chunk,
    parse_control_file,
    parse_dump_name,
    rejected_table,
)
from transforms.errors import InputError
from transforms.outcomes import Reason
from transforms.keys import (
    DUMP_SHARD_SCHEMA,
    PROFILE_SHARD_SCHEMA,
    build_decryptor,
    dump_keys,
    narrow_dictionary,
    profile_keys,
    segment_lists,
)
from transforms.memory import release_free_memory
from transforms.parallel import PooledDoFn, ordered_map
from transforms.profiles import read_profiles
from transforms.storage import MatchFiles, glob

NAMESPACE = "audience_sync"
KEY_HASHES = "key_hashes"  # per dump chunk: (data_source, 64-bit hashes of its keys) for the Bloom filter

MEMBERSHIP_SCHEMA = pa.schema(
    [("data_source", pa.string()), ("segment_id", pa.string()), ("profile_id", pa.string())]
)
FILE_AUDIENCE_SCHEMA = pa.schema(
    [("data_source", pa.string()), ("segment_id", pa.string()), ("channel", pa.string()), ("address", pa.string())]
)

# Output tags
REJECTED = "rejected"
COUNTS = "counts"
FILE_AUDIENCE = "file_audience"
REMOVED_MEMBERS = "removed_members"
FILE_AUDIENCE_REMOVED = "file_audience_removed"
CONTROL = "control"
FILE_STATS = "file_stats"


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


class ExpandPatterns(beam.DoFn):
    """``(data_source, glob)`` -> ``(data_source, path)`` for each dump file; an empty match fails.
    The ``.info`` control files in the dumps' folders go to the ``control`` output."""

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
                yield beam.pvalue.TaggedOutput(CONTROL, control)


class ReadControlFile(beam.DoFn):
    """A ``.info`` control file -> ``(control path, {listed dump: promised FileStats})``."""

    def process(self, control: str):
        with FileSystems.open(control) as handle:
            yield control, parse_control_file(control, handle.read())


def check_control_files(controls: list, stats: list) -> None:
    """Compare every dump a control file lists with what was read (lines, stored size, md5): a batch
    that arrived incomplete or altered fails the run, naming the file. Runs in the publish step."""
    read = dict(stats)
    for control, promised in sorted(controls):
        for path, expected in sorted(promised.items()):
            actual = read.get(path)
            if actual is None:
                raise InputError(path, f"listed in control file {control.rsplit('/', 1)[-1]} but not read (missing?)")
            check_against_control(path, actual, expected, control)


def shards(keyed: pa.Table, hashes: np.ndarray, buckets: int) -> list[tuple[int, pa.Table]]:
    """``(bucket, rows)`` for each non-empty shard of a one-source keyed table."""
    return list(split_by_bucket(keyed, buckets_from_hash(hashes, buckets))) if keyed.num_rows else []


class ReadDumpFile(PooledDoFn):
    """Read one dump file in chunks, key its lines and shard them by key: emits
    ``((data_source, bucket), keyed lines)``, rejected tables, counts, and the key hashes of
    each chunk (``key_hashes``, for the Bloom filter).

    Reading, keying and sharding stay in one DoFn so a chunk's intermediate tables never pile up
    in runners that do not fuse steps. While this thread decompresses the next chunk, a small pool
    (``threads``) parses, decrypts and shards the previous ones; results are emitted in file order.
    Ciphers and the pool are built in setup(), from key references."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None, incremental: bool = False):
        self._cfg = cfg
        self._run_date = run_date
        self._incremental = incremental
        self._threads = cfg.threads

    def setup(self):
        super().setup()
        self._received = _counter("dump_lines_read")
        self._decryptors = {ds.name: build_decryptor(ds, self._run_date) for ds in self._cfg.data_sources}

    def finish_bundle(self):
        release_free_memory()

    def process(self, element):
        name, path = element
        ds = self._cfg.data_source(name)
        stats = FileStats()
        dump_name = parse_dump_name(path)
        removals = self._incremental and dump_name is not None and dump_name.sync_mode == "iter"
        key_chunk = functools.partial(self._key_chunk, path, ds, removals)
        chunks = numbered_chunks(path, stats=stats)
        for lines, rejected, hashes, pieces in ordered_map(key_chunk, chunks, self._pool, ahead=self._cfg.threads):
            self._received.inc(lines)
            yield beam.pvalue.TaggedOutput(COUNTS, ((name, "received"), lines))
            for table in rejected:
                yield beam.pvalue.TaggedOutput(REJECTED, table)
            if hashes is not None:
                yield beam.pvalue.TaggedOutput(KEY_HASHES, (name, hashes))
            for bucket, rows in pieces:
                yield (name, bucket), rows
        yield beam.pvalue.TaggedOutput(FILE_STATS, (path, stats))

    def _key_chunk(self, path: str, ds, removals: bool, job: tuple[bytes, int]):
        """One chunk -> (lines, rejected tables, key hashes or None, shards). Runs in the pool."""
        parsed, rejected, lines = parse_chunk(*job, path, ds, removals)
        if not removals:  # full dumps: removed lists are ignored
            parsed = parsed.set_column(parsed.schema.get_field_index("removed"), "removed", _empty_lists(parsed.num_rows))
        keyed, invalid = dump_keys(parsed, ds, self._decryptors[ds.name]) if parsed.num_rows else (None, None)
        hashes = hash64(keyed["key"]) if keyed is not None and keyed.num_rows else None
        pieces = shards(keyed, hashes, self._cfg.buckets) if hashes is not None else []
        return lines, [t for t in (rejected, invalid) if t is not None and t.num_rows], hashes, pieces


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

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg
        self._threads = cfg.threads

    def finish_bundle(self):
        release_free_memory()

    def process(self, path: str, filters: dict):
        cfg = self._cfg
        for profiles in read_profiles(path, cfg):
            yield beam.pvalue.TaggedOutput(COUNTS, (("", "profiles_read"), profiles.num_rows))
            key_source = functools.partial(self._key_source, profiles, filters)
            for name, counts, pieces in ordered_map(key_source, cfg.data_sources, self._pool, ahead=len(cfg.data_sources)):
                for counter, n in counts.items():
                    yield beam.pvalue.TaggedOutput(COUNTS, ((name, counter), n))
                for bucket, rows in pieces:
                    yield (name, bucket), rows

    def _key_source(self, profiles: pa.Table, filters: dict, ds):
        """One data source's keys of a profile batch, Bloom-filtered and sharded. Runs in the pool."""
        keyed, without_key = profile_keys(profiles, ds, self._cfg, binary=True)
        hashes = hash64(keyed["key"])
        key_filter = filters.get(ds.name)
        keep = key_filter.might_contain(hashes) if key_filter is not None else np.zeros(len(hashes), bool)
        candidates = keyed.filter(pa.array(keep))
        counts = {"profile_keys": keyed.num_rows, "profile_keys_shuffled": candidates.num_rows,
                  "profile_values_without_key": without_key}
        return ds.name, counts, shards(candidates, hashes[keep], self._cfg.buckets)


def _pairs_by_segment(pairs: pa.Table, lists: pa.Array, value: str) -> pa.Table:
    """``(segment_id, value)`` for each pair times each segment of its line's list, de-duplicated.
    Segment ids are dictionary-encoded (a byte a row on the way to the writers)."""
    per_pair = pa.table({value: pairs[value], "segments": lists})
    table = distinct(explode_list(per_pair, "segments", "segment_id").select(["segment_id", value]))
    return table.set_column(0, "segment_id", narrow_dictionary(pc.dictionary_encode(table["segment_id"])))


def join_bucket(dump: pa.Table, prof: pa.Table, data_source: str, channel: str, keep_file_audience: bool) -> dict:
    """Match one shard. One hash join of (line index, key) with the profile keys gives both the
    matched lines and the (line, profile) pairs; memberships are those pairs times the lines'
    segments, removals the pairs times the lines' removed segments (incremental syncs only).

    Returns a dict: members, removed_members, file_audience, file_audience_removed (tables),
    rejected, reconciled (matched lines), file_audience_lines."""
    lines = pa.table({"row": pa.array(np.arange(dump.num_rows, dtype=np.int64)), "key": dump["key"]})
    pairs = lines.join(prof.select(["key", "profile_id"]), keys="key", join_type="inner")
    matched = np.zeros(dump.num_rows, dtype=bool)
    matched[pairs["row"].to_numpy()] = True
    miss = dump.filter(pa.array(~matched))

    def with_source(table: pa.Table, **extra) -> pa.Table:
        table = table.add_column(0, "data_source", narrow_dictionary(constant(data_source, table.num_rows)))
        for i, (name, value) in enumerate(extra.items(), start=2):
            table = table.add_column(i, name, narrow_dictionary(constant(value, table.num_rows)))
        return table

    out = {
        "members": with_source(_pairs_by_segment(pairs, segment_lists(dump["segments"].take(pairs["row"])), "profile_id")),
        "removed_members": with_source(_pairs_by_segment(pairs, segment_lists(dump["removed"].take(pairs["row"])), "profile_id")),
        "reconciled": int(matched.sum()),
        "file_audience_lines": 0,
        "file_audience": None,
        "file_audience_removed": None,
        "rejected": None,
    }
    if keep_file_audience:
        # A file audience's source decrypts: its join key is the normalized address's UTF-8 bytes.
        missed = pa.table({"address": miss["key"].cast(pa.string())})
        out["file_audience"] = with_source(_pairs_by_segment(missed, segment_lists(miss["segments"]), "address"), channel=channel)
        out["file_audience_removed"] = with_source(_pairs_by_segment(missed, segment_lists(miss["removed"]), "address"), channel=channel)
        out["file_audience_lines"] = miss.num_rows
    else:
        reasons = pa.repeat(pa.scalar(Reason.NO_MATCHING_PROFILE), miss.num_rows)
        out["rejected"] = rejected_table(data_source, miss["source_file"].combine_chunks(), miss["line"].combine_chunks(), reasons)
    return out


class JoinShard(beam.DoFn):
    """One shard's dump lines (grouped) against its profile keys (``profiles``: a multimap side
    input from ``(data_source, bucket)`` to the profile tables of that shard).

    Only the dump side goes through the GroupByKey. The profile side, small once Bloom-filtered,
    is looked up by shard: runners index a multimap side input by key (Dataflow reads only the
    keys a worker asks for), and a local runner does not copy it through a second shuffle, or
    through the Flatten that a two-sided GroupByKey needs (FnApiRunner materializes a Flatten).
    """

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def setup(self):
        self._reconciled = _counter("lines_reconciled")

    def finish_bundle(self):
        release_free_memory()

    def process(self, element, profiles):
        shard, dump_tables = element
        name = shard[0]
        # [] for a shard without profile keys. Never test `shard in profiles`: the view has no
        # __contains__, so Python would probe it with 0, 1, 2, ... forever.
        prof_tables = list(profiles[shard])
        ds = self._cfg.data_source(name)
        out = join_bucket(
            concat(dump_tables, DUMP_SHARD_SCHEMA),
            concat(prof_tables, PROFILE_SHARD_SCHEMA),
            name,
            ds.channel,
            ds.keeps_file_audience,
        )
        self._reconciled.inc(out["reconciled"])
        yield beam.pvalue.TaggedOutput(COUNTS, ((name, "reconciled"), out["reconciled"]))
        if out["file_audience_lines"]:
            yield beam.pvalue.TaggedOutput(COUNTS, ((name, "file_audience"), out["file_audience_lines"]))
        for tag in (REJECTED, FILE_AUDIENCE, REMOVED_MEMBERS, FILE_AUDIENCE_REMOVED):
            table = out[tag]
            if table is not None and table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if out["members"].num_rows:
            yield out["members"]


class ReconcileAudiences(beam.PTransform):
    """The import graph from a pipeline root to a dict of PCollections: Arrow tables
    (``reconciled``, ``file_audience``, ``rejected``, and for incremental syncs ``removed_members``
    and ``file_audience_removed``), counters (``counts``), ``(data_source, path)`` (``files``), and
    what the control-file check needs (``controls``, ``file_stats``)."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None = None, incremental: bool = False):
        super().__init__()
        self._cfg = cfg
        self._run_date = run_date
        self._incremental = incremental

    def expand(self, root):
        cfg = self._cfg
        matched = (
            root
            | "ListDumpPatterns" >> beam.Create([(ds.name, ds.segments) for ds in cfg.data_sources])
            | "MatchDumpFiles" >> beam.ParDo(ExpandPatterns()).with_outputs(CONTROL, main="files")
        )
        files = matched.files
        dumps = (
            files
            | "SpreadDumpFiles" >> beam.Reshuffle()
            | "ReadDumps" >> beam.ParDo(ReadDumpFile(cfg, self._run_date, self._incremental))
            .with_output_types(typing.Tuple[typing.Tuple[str, int], pa.Table])  # main output: what GroupShards takes
            .with_outputs(
                REJECTED, COUNTS, FILE_STATS, KEY_HASHES, main="shards"
            )
        )
        controls = matched[CONTROL] | "ReadControlFiles" >> beam.ParDo(ReadControlFile())
        key_filters = dumps[KEY_HASHES] | "BuildKeyFilters" >> beam.CombinePerKey(BuildKeyFilter())
        profiles = (
            root
            | "ListProfileExtracts" >> beam.Create([cfg.profiles.path])
            | "MatchProfileFiles" >> beam.ParDo(MatchFiles("profile extract"))
            | "SpreadProfileFiles" >> beam.Reshuffle()
            | "KeyProfiles" >> beam.ParDo(KeyProfiles(cfg), filters=beam.pvalue.AsDict(key_filters)).with_outputs(
                COUNTS, main="shards"
            )
        )
        joined = (
            dumps.shards
            | "GroupShards" >> beam.GroupByKey()
            | "JoinShards" >> beam.ParDo(JoinShard(cfg), profiles=beam.pvalue.AsMultiMap(profiles.shards)).with_outputs(
                REJECTED, COUNTS, FILE_AUDIENCE, REMOVED_MEMBERS, FILE_AUDIENCE_REMOVED, main="members"
            )
        )
        rejected = (dumps[REJECTED], joined[REJECTED]) | "FlattenRejected" >> beam.Flatten()
        counts = (dumps[COUNTS], profiles[COUNTS], joined[COUNTS]) | "FlattenCounts" >> beam.Flatten()
        return {
            "reconciled": joined.members,
            "file_audience": joined[FILE_AUDIENCE],
            "rejected": rejected,
            "counts": counts,
            "files": files,
            "controls": controls,
            FILE_STATS: dumps[FILE_STATS],
            REMOVED_MEMBERS: joined[REMOVED_MEMBERS],
            FILE_AUDIENCE_REMOVED: joined[FILE_AUDIENCE_REMOVED],
        }
