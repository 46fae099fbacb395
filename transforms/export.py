"""The export: targeted profiles -> the platform's onboarding files (formats.md sections 3 and 6).

A user's targeting result (a list of profile ids) is matched with the profile extract, and every
targeted profile ends in exactly one outcome:

==================  ===============================================================================
``unknown_profile``  the id is not in the extract
``opted_out``        the profile is opted out: never exported, whatever the targets or the existing
                     audience say
``unmapped``         no usable ID for the data source (listed in ``unmapped/``)
``already_present``  every (profile, user ID) pair is already in the existing export(s)
``exported``         at least one new (profile, user ID) pair is sent (listed in ``exported/``)
==================  ===============================================================================

The user ID a data source shares a profile by: its visitor IDs (``id_type: visitor``, one line per
valid 38-digit ID), or its declared ID (``match_on``): as is (plain, or encrypted with channel
other), normalized + SHA-256 + the digest encoding (hashed), or normalized + encrypted (encrypted,
channel email/sms; see :class:`transforms.crypto.CbcEncryptor` and :class:`transforms.crypto.GcmEncryptor`).

Elements are Arrow tables. Targets are few next to the profile base: a Bloom filter of their ids
(a side input) drops non-targeted profiles, and existing-export rows of other profiles, before
anything is shuffled; targets, candidate profiles and existing pairs then meet in one
``CoGroupByKey`` per shard of ``profile_id`` (duplicates of an id always land in the same shard, so
they are counted exactly), where Arrow kernels classify them. The user IDs to send are gathered
once, de-duplicated, sorted and cut into numbered files; each file is gzip-compressed (mtime 0) by
its own worker.

This module holds what one export is (:class:`ExportSpec`, from the flags) and the graph
(:class:`ExportAudience`). The parts, in the order a record meets them: :mod:`transforms.targets`
(reading target lists), :mod:`transforms.export_classify` (candidate profiles, existing pairs, the
per-shard classification), :mod:`transforms.onboarding` (the files sent), :mod:`transforms.export_report`
(the report and its checks); the launcher's checks are in :mod:`transforms.preflight`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import NamedTuple

import apache_beam as beam

from transforms.config import ConfigError, DataSourceConfig, JobConfig
from transforms.export_classify import (
    EXISTING,
    EXPORTED_SCHEMA,
    PROFILES,
    TARGETS,
    UNMAPPED_SCHEMA,
    ClassifyShard,
    ReadExistingPart,
    ReadTargetedProfiles,
)
from transforms.export_report import build_export_report, check_export_report
from transforms.join_inputs import BuildKeyFilter
from transforms.onboarding import (
    DEFAULT_MAX_LINES_PER_FILE,
    FileNames,
    SplitIntoFiles,
    WriteOnboardingFile,
    trait,
    valid_audience_name,
    write_control_file,
)
from transforms.outcomes import Counts, SumCounts
from transforms.publish import WriteParts, publish_outputs
from transforms.storage import MatchFiles, join_path
from transforms.targets import ReadTargetFile

# The export's outputs (folders under the output directory).
EXPORTED, UNMAPPED, ONBOARDING = "exported", "unmapped", "onboarding"


# ----------------------------------------------------------------------------------------------------
# What is exported, and how the files are named
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportSpec:
    """Everything about one export that is not the job config: picklable, no key material."""

    audience: str
    data_source: DataSourceConfig
    run_date: date
    segment_id: int | None = None
    max_lines_per_file: int = DEFAULT_MAX_LINES_PER_FILE

    @property
    def clock(self) -> datetime:
        """The run's clock: UTC midnight of the run date (never the wall clock)."""
        return datetime(self.run_date.year, self.run_date.month, self.run_date.day, tzinfo=timezone.utc)

    @property
    def timestamp(self) -> int:
        return int(self.clock.timestamp())

    @property
    def trait(self) -> str:
        """What each line adds: ``d_sid=N`` with a segment id, else ``"segment"="<audience>"``."""
        return trait(self.audience, self.segment_id)

    @property
    def file_names(self) -> FileNames:
        """The onboarding files' names: ``ftp_dpm_<DPID>_<UNIX_SECONDS>...``."""
        return FileNames(self.data_source.dpid, self.timestamp)


def check_audience_name(name: str) -> str:
    if not valid_audience_name(name):
        raise ConfigError(
            "--audience: must be non-empty, without leading/trailing spaces, quotes, commas, "
            "backslashes or control characters"
        )
    return name


def export_spec(cfg: JobConfig, audience: str, data_source: str | None, run_date: date,
                segment_id: int | None = None, max_lines_per_file: int | None = None) -> ExportSpec:
    """Resolve the export's data source and settings (flags first, then the config's ``export:``)."""
    section = cfg.export
    name = data_source or (section.data_source if section else None)
    if name is None:
        if len(cfg.data_sources) != 1:
            raise ConfigError(
                "--data-source: name the data source to share through (or set export.data_source); "
                f"configured: {', '.join(ds.name for ds in cfg.data_sources)}"
            )
        name = cfg.data_sources[0].name
    try:
        ds = cfg.data_source(name)
    except KeyError:
        raise ConfigError(
            f"--data-source: '{name}' is not a configured data source "
            f"(configured: {', '.join(d.name for d in cfg.data_sources)})"
        ) from None
    if segment_id is not None and segment_id <= 0:
        raise ConfigError("--segment-id: must be a positive integer")
    max_lines = max_lines_per_file or (section.max_lines_per_file if section else DEFAULT_MAX_LINES_PER_FILE)
    if max_lines < 1:
        raise ConfigError("--max-lines-per-file: must be at least 1")
    return ExportSpec(check_audience_name(audience), ds, run_date, segment_id, max_lines)


def export_config(cfg: JobConfig, spec: ExportSpec) -> JobConfig:
    """The job config narrowed to the exported data source: the extract is read for its columns only."""
    return cfg.model_copy(update={"data_sources": [spec.data_source]})


# ----------------------------------------------------------------------------------------------------
# The graph
# ----------------------------------------------------------------------------------------------------
class ExportOutputs(NamedTuple):
    """What :class:`ExportAudience` gives back once the run is published."""

    report: beam.PCollection  # one element: the report dict written as report.json
    counts: beam.PCollection  # the summed ``(Count, n)`` the report was built from


class PublishExport(beam.DoFn):
    """Once every part and file is written: build and check the report, write the ``.info`` control
    file (when there is data to send), then publish all outputs, ``report.json`` last."""

    def __init__(self, spec: ExportSpec, output_dir: str, run_dir: str, targets: str, existing: list[str]):
        self._spec, self._output_dir, self._run_dir = spec, output_dir, run_dir
        self._targets, self._existing = targets, existing

    def process(self, _, parts, counts, files):
        report = build_export_report(self._spec, Counts(counts), files, self._targets, self._existing)
        check_export_report(report)
        parts = list(parts)
        if files:
            for f in files:
                parts.append((ONBOARDING, f["path"], f["lines"]))
            info = join_path(self._run_dir, ONBOARDING, self._spec.file_names.control_file)
            write_control_file(info, files)
            parts.append((ONBOARDING, info, 0))
        outputs = {EXPORTED: EXPORTED_SCHEMA, UNMAPPED: UNMAPPED_SCHEMA, ONBOARDING: None}
        publish_outputs(self._output_dir, self._run_dir, outputs, parts, report)
        yield report


class ExportAudience(beam.PTransform):
    """The whole export graph from a pipeline root; publishes under ``output_dir`` at the end."""

    def __init__(self, cfg: JobConfig, spec: ExportSpec, targets: str, existing: list[str], output_dir: str, run_dir: str):
        super().__init__()
        self._cfg, self._spec = export_config(cfg, spec), spec
        self._targets, self._existing = targets, list(existing)
        self._output_dir, self._run_dir = output_dir, run_dir

    def expand(self, root) -> ExportOutputs:
        buckets = self._cfg.buckets
        targets = _read_files(root, ("ListTargetFiles", "MatchTargetFiles", "SpreadTargetFiles", "ReadTargets"),
                              [self._targets], "targets file", ReadTargetFile(buckets), tags=(ReadTargetFile.HASHES,))
        target_filter = beam.pvalue.AsSingleton(
            targets[ReadTargetFile.HASHES] | "BuildTargetFilter" >> beam.CombineGlobally(BuildKeyFilter())
        )
        profiles = _read_files(
            root, ("ListProfileExtracts", "MatchProfileFiles", "SpreadProfileFiles", "ReadTargetedProfiles"),
            [self._cfg.profiles.path], "profile extract", ReadTargetedProfiles(self._cfg, self._spec, buckets),
            side_inputs=(target_filter,))
        existing = _read_files(
            root, ("ListExistingExports", "MatchExistingParts", "SpreadExistingParts", "ReadExisting"),
            [join_path(d, EXPORTED, "*.parquet") for d in self._existing], "existing export part",
            ReadExistingPart(buckets), side_inputs=(target_filter,))
        classified = (
            {TARGETS: targets.shards, PROFILES: profiles.shards, EXISTING: existing.shards}
            | "GroupShards" >> beam.CoGroupByKey()
            | "ClassifyTargets" >> beam.ParDo(ClassifyShard())
            .with_outputs(ClassifyShard.COUNTS, ClassifyShard.UNMAPPED, main="sent")
        )
        parts, files, split_counts = self._write(classified)
        counts = (
            (targets[ReadTargetFile.COUNTS], profiles[ReadTargetedProfiles.COUNTS],
             existing[ReadExistingPart.COUNTS], classified[ClassifyShard.COUNTS], split_counts)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> SumCounts()
        )
        report = (
            root
            | "Once" >> beam.Create([None])
            | "PublishExport" >> beam.ParDo(
                PublishExport(self._spec, self._output_dir, self._run_dir, self._targets, self._existing),
                beam.pvalue.AsList(parts), beam.pvalue.AsList(counts), beam.pvalue.AsList(files),
            )
        )
        return ExportOutputs(report=report, counts=counts)

    def _write(self, classified):
        """Pairs to send and unmapped ids -> Parquet parts; user IDs -> onboarding files.
        Returns ``(parts, files, counts)``."""
        cfg, spec = self._cfg, self._spec
        exported = classified.sent | "WriteExported" >> WriteParts(
            EXPORTED, EXPORTED_SCHEMA, ["profile_id", "user_id"], "profile_id", self._run_dir, cfg.buckets,
            dedupe=True, threads=cfg.threads)
        unmapped = classified[ClassifyShard.UNMAPPED] | "WriteUnmapped" >> WriteParts(
            UNMAPPED, UNMAPPED_SCHEMA, ["profile_id"], "profile_id", self._run_dir, cfg.buckets, dedupe=True,
            threads=cfg.threads)
        split = (
            classified.sent
            | "KeyUserIds" >> beam.Map(lambda table: (0, table.select(["user_id"])))
            | "GatherUserIds" >> beam.GroupByKey()
            | "SortAndSplit" >> beam.ParDo(SplitIntoFiles(spec.max_lines_per_file))
            .with_outputs(SplitIntoFiles.COUNTS, main="files")
        )
        files = (
            split.files
            | "SpreadFiles" >> beam.Reshuffle()
            | "WriteOnboardingFiles" >> beam.ParDo(
                WriteOnboardingFile(spec.file_names, spec.trait, join_path(self._run_dir, ONBOARDING)))
        )
        parts = (exported.parts, unmapped.parts) | "AllParts" >> beam.Flatten()
        return parts, files, split[SplitIntoFiles.COUNTS]


def _read_files(root, labels: tuple[str, str, str, str], patterns: list[str], description: str, reader: beam.DoFn,
                side_inputs: tuple = (), tags: tuple[str, ...] = ()):
    """List the ``patterns``, match their files, spread the files over workers and read each with
    ``reader``: main output ``shards``, plus its ``COUNTS`` and ``tags``."""
    listed, matched, spread, read = labels
    return (
        root
        | listed >> beam.Create(patterns)
        | matched >> beam.ParDo(MatchFiles(description))
        | spread >> beam.Reshuffle()
        | read >> beam.ParDo(reader, *side_inputs).with_outputs(reader.COUNTS, *tags, main="shards")
    )
