"""The import's core: read dumps and profiles, key both sides, join them bucket by bucket.

Elements are Arrow tables, never rows: a DoFn receives and emits whole tables, so the per-record
work happens in Arrow/numpy kernels. Both sides are split into ``cfg.buckets`` shards by a stable
hash of the join key; one ``GroupByKey`` on ``(data_source, bucket)`` brings a shard's dump lines and
profile keys together, where Arrow's hash join matches them. On Dataflow/Flink the shards spread
over workers.

Every dump line ends in exactly one place: a membership (``reconciled``), the file audience, or a
rejection with a reason. Counts travel as ``((data_source, counter), n)`` pairs on the ``counts``
output and are summed once at the end (see :mod:`transforms.report`).
"""
from __future__ import annotations

from datetime import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.arrow_utils import KeyFilter, buckets_from_hash, concat, constant, distinct, explode_list, hash64, split_by_bucket
from transforms.config import JobConfig
from transforms.dumps import REJECTED_SCHEMA, is_dump_file, read_dump, rejected_table
from transforms.errors import InputError
from transforms.keys import KEYED_SCHEMA, PROFILE_KEY_SCHEMA, build_decryptor, dump_keys, profile_keys
from transforms.profiles import read_profiles

NAMESPACE = "audience_sync"
NO_MATCHING_PROFILE = "no_matching_profile"
KEY_HASH = "key_hash"  # stable 64-bit hash of the join key: shard number and Bloom filter probes

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
DUMP_SIDE, PROFILE_SIDE = "d", "p"


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


class ExpandPatterns(beam.DoFn):
    """``(data_source, glob)`` -> ``(data_source, path)`` for each dump file; an empty match fails."""

    def process(self, element):
        name, pattern = element
        matched = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
        paths = [p for p in matched if is_dump_file(p)]
        if not paths:
            raise InputError(pattern, f"no segment dump matches (data source '{name}')")
        for path in paths:
            yield name, path


def shards(table: pa.Table, hashes: np.ndarray, buckets: int, side: str):
    """``((data_source, bucket), (side, rows))`` for each non-empty shard of a one-source table."""
    name = table["data_source"][0].as_py()
    for bucket, rows in split_by_bucket(table, buckets_from_hash(hashes, buckets)):
        yield (name, bucket), (side, rows)


class ReadDumpFile(beam.DoFn):
    """Read one dump file in chunks, key its lines and shard them by key: emits
    ``((data_source, bucket), ("d", keyed lines))``, rejected tables and counts.

    Reading, keying and sharding stay in one DoFn so a chunk's intermediate tables never pile up
    in runners that do not fuse steps. Ciphers are built in setup(), from key references."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None):
        self._cfg = cfg
        self._run_date = run_date

    def setup(self):
        self._received = _counter("dump_lines_read")
        self._decryptors = {ds.name: build_decryptor(ds, self._run_date) for ds in self._cfg.data_sources}

    def process(self, element):
        name, path = element
        ds = self._cfg.data_source(name)
        for parsed, rejected, lines in read_dump(path, ds):
            self._received.inc(lines)
            yield beam.pvalue.TaggedOutput(COUNTS, ((name, "received"), lines))
            if rejected.num_rows:
                yield beam.pvalue.TaggedOutput(REJECTED, rejected)
            if not parsed.num_rows:
                continue
            keyed, rejected = dump_keys(parsed, ds, self._decryptors[name])
            if rejected.num_rows:
                yield beam.pvalue.TaggedOutput(REJECTED, rejected)
            if keyed.num_rows:
                hashes = hash64(keyed["key"])
                yield from shards(keyed.append_column(KEY_HASH, pa.array(hashes)), hashes, self._cfg.buckets, DUMP_SIDE)


class BuildKeyFilter(beam.CombineFn):
    """Per data source: a Bloom filter of the dump lines' key hashes (a few bytes per line)."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, hashes: np.ndarray):
        acc.append(hashes)
        return acc

    def merge_accumulators(self, accs):
        return [np.concatenate([a for acc in accs for a in acc])] if any(accs) else []

    def extract_output(self, acc):
        return KeyFilter(np.concatenate(acc) if acc else np.zeros(0, np.uint64))


class KeyProfiles(beam.DoFn):
    """Read one profile extract in batches and emit, per data source, the shards of its
    ``(data_source, key, profile_id)`` rows: ``((data_source, bucket), ("p", rows))``.

    Profile keys that no dump line of the data source can have (per the dump keys' Bloom filter,
    a side input) are dropped before the shuffle: a dump usually names a small share of the
    profile base, and the exact join only needs the candidates. A source without dump lines keeps
    none. Raw profile batches never leave this DoFn, so they never pile up in memory.
    """

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def process(self, path: str, filters: dict):
        for profiles in read_profiles(path, self._cfg):
            yield beam.pvalue.TaggedOutput(COUNTS, (("", "profiles_read"), profiles.num_rows))
            for ds in self._cfg.data_sources:
                keyed, without_key = profile_keys(profiles, ds, self._cfg)
                hashes = hash64(keyed["key"])
                key_filter = filters.get(ds.name)
                keep = key_filter.might_contain(hashes) if key_filter is not None else np.zeros(len(hashes), bool)
                candidates = keyed.filter(pa.array(keep))
                yield beam.pvalue.TaggedOutput(COUNTS, ((ds.name, "profile_keys"), keyed.num_rows))
                yield beam.pvalue.TaggedOutput(COUNTS, ((ds.name, "profile_keys_shuffled"), candidates.num_rows))
                yield beam.pvalue.TaggedOutput(COUNTS, ((ds.name, "profile_values_without_key"), without_key))
                if candidates.num_rows:
                    yield from shards(candidates, hashes[keep], self._cfg.buckets, PROFILE_SIDE)


def join_bucket(dump: pa.Table, prof: pa.Table, data_source: str, channel: str, keep_file_audience: bool):
    """Match one shard. Returns (memberships, file_audience, rejected, reconciled_lines, file_audience_lines).

    One hash join of (line index, key) with the profile keys gives both the matched lines and the
    (line, profile) pairs; memberships are those pairs times the lines' segments."""
    lines = pa.table({"row": pa.array(np.arange(dump.num_rows, dtype=np.int64)), "key": dump["key"]})
    pairs = lines.join(prof.select(["key", "profile_id"]), keys="key", join_type="inner")
    rows = pairs["row"].to_numpy()
    matched = np.zeros(dump.num_rows, dtype=bool)
    matched[rows] = True
    hit_count = int(matched.sum())
    miss = dump.filter(pa.array(~matched))

    segments = dump["segments"].take(pairs["row"])
    per_pair = pa.table({"profile_id": pairs["profile_id"], "segments": segments})
    members = distinct(explode_list(per_pair, "segments", "segment_id").select(["segment_id", "profile_id"]))
    members = members.add_column(0, "data_source", constant(data_source, members.num_rows))

    if keep_file_audience:
        audience = distinct(explode_list(miss.select(["address", "segments"]), "segments", "segment_id"))
        n = audience.num_rows
        audience = pa.table(
            {
                "data_source": constant(data_source, n),
                "segment_id": audience["segment_id"],
                "channel": constant(channel, n),
                "address": audience["address"],
            }
        )
        rejected = REJECTED_SCHEMA.empty_table()
        file_lines = miss.num_rows
    else:
        audience = FILE_AUDIENCE_SCHEMA.empty_table()
        reasons = pa.repeat(pa.scalar(NO_MATCHING_PROFILE), miss.num_rows)
        rejected = rejected_table(data_source, miss["source_file"].combine_chunks(), miss["line"].combine_chunks(), reasons)
        file_lines = 0
    return members, audience, rejected, hit_count, file_lines


class JoinShard(beam.DoFn):
    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def setup(self):
        self._reconciled = _counter("lines_reconciled")

    def process(self, element):
        (name, _bucket), tagged = element
        dump_tables, prof_tables = [], []
        for side, table in tagged:
            (dump_tables if side == DUMP_SIDE else prof_tables).append(table)
        if not dump_tables:
            return
        ds = self._cfg.data_source(name)
        members, audience, rejected, hits, file_lines = join_bucket(
            concat(dump_tables, KEYED_SCHEMA),
            concat(prof_tables, PROFILE_KEY_SCHEMA),
            name,
            ds.channel,
            ds.keeps_file_audience,
        )
        self._reconciled.inc(hits)
        yield beam.pvalue.TaggedOutput(COUNTS, ((name, "reconciled"), hits))
        if file_lines:
            yield beam.pvalue.TaggedOutput(COUNTS, ((name, "file_audience"), file_lines))
        if rejected.num_rows:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected)
        if audience.num_rows:
            yield beam.pvalue.TaggedOutput(FILE_AUDIENCE, audience)
        if members.num_rows:
            yield members


class ReconcileAudiences(beam.PTransform):
    """The import graph from a pipeline root to four PCollections of Arrow tables / counts:
    ``reconciled``, ``file_audience``, ``rejected`` and ``counts``."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None = None):
        super().__init__()
        self._cfg = cfg
        self._run_date = run_date

    def expand(self, root):
        cfg = self._cfg
        files = (
            root
            | "ListDumpPatterns" >> beam.Create([(ds.name, ds.segments) for ds in cfg.data_sources])
            | "MatchDumpFiles" >> beam.ParDo(ExpandPatterns())
        )
        dumps = (
            files
            | "SpreadDumpFiles" >> beam.Reshuffle()
            | "ReadDumps" >> beam.ParDo(ReadDumpFile(cfg, self._run_date)).with_outputs(REJECTED, COUNTS, main="shards")
        )
        key_filters = (
            dumps.shards
            | "DumpKeyHashes" >> beam.Map(lambda shard: (shard[0][0], shard[1][1][KEY_HASH].to_numpy()))
            | "BuildKeyFilters" >> beam.CombinePerKey(BuildKeyFilter())
        )
        profiles = (
            root
            | "ListProfileExtracts" >> beam.Create([cfg.profiles.path])
            | "MatchProfileFiles" >> beam.ParDo(ExpandProfilePattern())
            | "SpreadProfileFiles" >> beam.Reshuffle()
            | "KeyProfiles" >> beam.ParDo(KeyProfiles(cfg), filters=beam.pvalue.AsDict(key_filters)).with_outputs(
                COUNTS, main="shards"
            )
        )
        joined = (
            (dumps.shards, profiles.shards)
            | "FlattenShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "JoinShards" >> beam.ParDo(JoinShard(cfg)).with_outputs(REJECTED, COUNTS, FILE_AUDIENCE, main="members")
        )
        rejected = (dumps[REJECTED], joined[REJECTED]) | "FlattenRejected" >> beam.Flatten()
        counts = (dumps[COUNTS], profiles[COUNTS], joined[COUNTS]) | "FlattenCounts" >> beam.Flatten()
        return {
            "reconciled": joined.members,
            "file_audience": joined[FILE_AUDIENCE],
            "rejected": rejected,
            "counts": counts,
            "files": files,
        }


class ExpandProfilePattern(beam.DoFn):
    def process(self, pattern: str):
        paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
        if not paths:
            raise InputError(pattern, "no profile extract matches")
        yield from paths
