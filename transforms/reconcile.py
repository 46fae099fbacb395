"""The import graph: read dumps and profiles, key both sides, join them shard by shard.

Both sides are split into ``cfg.buckets`` shards by a stable hash of the join key
(:mod:`transforms.join_inputs`, :mod:`transforms.key_profiles`); a ``GroupByKey`` on
``(data_source, bucket)`` gathers a shard's dump lines, which meet that shard's profile keys (a
multimap side input) in Arrow's hash join (:mod:`transforms.join`). On Dataflow/Flink the shards spread
over workers.

Every dump line ends in exactly one place: a membership (``reconciled``), the file audience, or a
rejection with a reason. Counts travel as ``(Count, n)`` pairs (:mod:`transforms.outcomes`) and are
summed once at the end.
"""
from __future__ import annotations

import typing
from datetime import datetime
from typing import NamedTuple

import apache_beam as beam

from transforms.config import JobConfig
from transforms.control_files import ReadControlFile
from transforms.diagnosis import DiagnoseMismatches, DiagnosisInputs
from transforms.iv_check import CheckIVs
from transforms.join import JoinShard
from transforms.key_cache import KeyCacheDirs
from transforms.join_inputs import BuildKeyFilter, ExpandPatterns, ReadDumpFile, SplitBigDumps
from transforms.key_profiles import KeyProfiles
from transforms.outcomes import COUNTS
from transforms.packed_tables import PackedTable
from transforms.storage import MatchFiles


class ImportOutputs(NamedTuple):
    """What :class:`ReconcileAudiences` gives: PCollections of Arrow tables, counts and file facts."""

    reconciled: beam.PCollection  # membership pairs (data_source, SEGMENT_SET, profile_id; keys.segment_rows makes them
    # MEMBERSHIP_SCHEMA rows, as the writers do), as BucketPieces split for the writers
    file_audience: beam.PCollection  # file-audience tables (FILE_AUDIENCE_SCHEMA columns); packed BucketPieces without suppression lists
    rejected: beam.PCollection  # rejected-line tables (REJECTED_SCHEMA columns)
    removed_members: beam.PCollection  # incremental syncs: memberships the night's lines remove (pairs, as reconciled)
    file_audience_removed: beam.PCollection  # incremental syncs: file-audience rows removed
    counts: beam.PCollection  # (Count, n)
    files: beam.PCollection  # (data_source, dump path)
    controls: beam.PCollection  # (control file, {dump: promised FileStats})
    file_stats: beam.PCollection  # (dump path, FileStats read)
    key_cache_parts: beam.PCollection  # with a key cache: this run's staged parts (transforms.key_cache)
    diagnosis: beam.PCollection  # (data_source, [finding]) of the mismatch diagnosis (none when it is off)
    profile_ids: beam.PCollection  # with profile_ids: the extract's profile ids, as BucketPieces split for the writers
    extract_sketches: beam.PCollection  # per extract file, its FileSketch (transforms.extract_copies)


class ReconcileAudiences(beam.PTransform):
    """The import graph from a pipeline root to :class:`ImportOutputs`; ``profile_ids``: also give
    the extract's profile ids (a nightly that carries the previous memberships)."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None = None, incremental: bool = False,
                 key_cache: KeyCacheDirs | None = None, split_bytes: int | None = None, profile_ids: bool = False,
                 undelivered: frozenset = frozenset()):
        super().__init__()
        self._undelivered = undelivered  # data sources whose dumps are not read (a night they may skip)
        self._profile_ids = profile_ids
        self._cfg = cfg
        self._run_date = run_date
        self._incremental = incremental
        self._key_cache = key_cache
        self._split_bytes = split_bytes  # dumps this big are read by one worker, keyed by all (None: never)

    def expand(self, root) -> ImportOutputs:
        cfg = self._cfg
        matched = (
            root
            | "ListDumpPatterns" >> beam.Create([(ds.name, ds.segments) for ds in cfg.data_sources
                                                 if ds.name not in self._undelivered])
            | "MatchDumpFiles" >> beam.ParDo(ExpandPatterns()).with_outputs(ExpandPatterns.CONTROL, main="files")
        )
        files = matched.files
        work = (
            files
            | "SpreadDumpFiles" >> beam.Reshuffle()
            | "SplitBigDumps" >> beam.ParDo(SplitBigDumps(self._split_bytes)).with_outputs(ReadDumpFile.FILE_STATS, main="work")
        )
        dumps = (
            work.work
            | "SpreadDumpWork" >> beam.Reshuffle()
            | "ReadDumps" >> beam.ParDo(ReadDumpFile(cfg, self._run_date, self._incremental))
            .with_output_types(typing.Tuple[typing.Tuple[str, int], PackedTable])  # main output: what GroupShards takes
            .with_outputs(
                ReadDumpFile.REJECTED, COUNTS, ReadDumpFile.FILE_STATS, ReadDumpFile.KEY_HASHES,
                ReadDumpFile.FIRST_BLOCKS, ReadDumpFile.DIAGNOSABLE, main="shards"
            )
        )
        controls = matched[ExpandPatterns.CONTROL] | "ReadControlFiles" >> beam.ParDo(ReadControlFile())
        key_filters = dumps[ReadDumpFile.KEY_HASHES] | "BuildKeyFilters" >> beam.CombinePerKey(BuildKeyFilter())
        profile_files = (
            root
            | "ListProfileExtracts" >> beam.Create([cfg.profiles.path])
            | "MatchProfileFiles" >> beam.ParDo(MatchFiles("profile extract"))
        )
        profiles = (
            profile_files
            | "SpreadProfileFiles" >> beam.Reshuffle()
            | "KeyProfiles" >> beam.ParDo(KeyProfiles(cfg, self._key_cache, self._profile_ids),
                                           filters=beam.pvalue.AsDict(key_filters), files=beam.pvalue.AsSingleton(
                                               profile_files | "CountProfileFiles" >> beam.combiners.Count.Globally()))
            .with_outputs(COUNTS, KeyProfiles.FIRST_BLOCKS, KeyProfiles.CACHE_PARTS, KeyProfiles.SCREEN,
                          KeyProfiles.PROFILE_IDS, KeyProfiles.SKETCHES, main="shards")
        )
        iv_checked = (dumps[ReadDumpFile.FIRST_BLOCKS], profiles[KeyProfiles.FIRST_BLOCKS]) | "CheckIVs" >> CheckIVs(cfg)
        joined = (
            dumps.shards
            | "GroupShards" >> beam.GroupByKey()
            | "JoinShards" >> beam.ParDo(JoinShard(cfg), profiles=beam.pvalue.AsMultiMap(profiles.shards)).with_outputs(
                JoinShard.REJECTED, COUNTS, JoinShard.FILE_AUDIENCE, JoinShard.REMOVED_MEMBERS,
                JoinShard.FILE_AUDIENCE_REMOVED, JoinShard.UNMATCHED, main="members"
            )
        )
        if any(cfg.sample_size(ds) for ds in cfg.data_sources):
            candidates = (dumps[ReadDumpFile.DIAGNOSABLE], joined[JoinShard.UNMATCHED]) | "FlattenSampled" >> beam.Flatten()
            diagnosis = DiagnosisInputs(candidates, profiles[KeyProfiles.SCREEN], profile_files) | "Diagnose" >> (
                DiagnoseMismatches(cfg, self._run_date))
        else:
            diagnosis = root | "NoDiagnosis" >> beam.Create([])
        rejected = (dumps[ReadDumpFile.REJECTED], joined[JoinShard.REJECTED]) | "FlattenRejected" >> beam.Flatten()
        # The IV check's count is among the counts: the publish step, which waits for all of them,
        # cannot run before the check has passed.
        counts = (dumps[COUNTS], profiles[COUNTS], joined[COUNTS], iv_checked) | "FlattenCounts" >> beam.Flatten()
        return ImportOutputs(
            reconciled=joined.members,
            file_audience=joined[JoinShard.FILE_AUDIENCE],
            rejected=rejected,
            removed_members=joined[JoinShard.REMOVED_MEMBERS],
            file_audience_removed=joined[JoinShard.FILE_AUDIENCE_REMOVED],
            counts=counts,
            files=files,
            controls=controls,
            file_stats=(work[ReadDumpFile.FILE_STATS], dumps[ReadDumpFile.FILE_STATS]) | "FlattenFileStats" >> beam.Flatten(),
            key_cache_parts=profiles[KeyProfiles.CACHE_PARTS],
            diagnosis=diagnosis,
            profile_ids=profiles[KeyProfiles.PROFILE_IDS],
            extract_sketches=profiles[KeyProfiles.SKETCHES],
        )
