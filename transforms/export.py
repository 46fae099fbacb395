"""The export: targeted profiles -> the platform's onboarding files (formats.md sections 3 and 6),
adding the audience's new members and removing its leavers.

A user's targeting result (a list of profile ids: the whole audience, every time) is matched with the
profile extract, and every targeted profile ends in exactly one outcome:

=====================  ==============================================================================
``unknown_profile``    the id is not in the extract
``suppressed``         its email or phone is on a suppression list: never shared
``opted_out``          the profile is opted out: never exported, whatever the targets or the state say
``consent_unknown``    its opt-out value is empty/null/missing: never exported (transforms/consent.py)
``unmapped``           no usable ID for the data source (listed in ``unmapped/``)
``already_present``    none of its user IDs is added; one is already held by the platform (earlier state)
``shares_blocked_id``  every user ID it has is withheld: a profile that is not eligible has it too
``exported``           at least one of its user IDs is added
=====================  ==============================================================================

Then, per user ID (several profiles may share one), against what the platform holds (the export
state ``--state ROOT`` or previous exports ``--existing``): ``added``, ``unchanged``, or ``removed``
with a reason (``suppressed``, ``opted_out``, ``consent_unknown``, ``deleted_profile``,
``untargeted``, ``id_changed``); a user ID that a non-eligible profile also has is ``withheld``
(:mod:`transforms.export_decide`). ``--mode sync`` writes ``.sync`` files: ``d_sid`` lines for the
added, ``d_unsid`` lines for the removed (a key-value audience cannot remove: a run with leavers
fails before publishing and says to use ``--mode overwrite``). ``--mode overwrite`` (needs
``--state``) writes ``.overwrite`` files: every member's full trait list for the data source, and
the leavers with what they keep.

The user ID a data source shares a profile by: its visitor IDs (``id_type: visitor``, one line per
valid 38-digit ID), or its declared ID (``match_on``): as is (plain, or encrypted with channel
other), normalized + SHA-256 + the digest encoding (hashed), or normalized + encrypted (encrypted,
channel email/sms; see :class:`transforms.encrypt.CbcEncryptor` and :class:`transforms.encrypt.GcmEncryptor`).

Elements are Arrow tables. Two ``CoGroupByKey`` stages: per shard of ``profile_id`` (targets,
candidate profiles let through by a Bloom filter of the targets, the earlier state's profiles and
those with a non-eligible row (a first, narrow pass over the extract), earlier pairs:
:mod:`transforms.export_classify`), then per shard of ``user_id`` (desired pairs, held pairs, blocked
user IDs, other audiences' traits: :mod:`transforms.export_decide`); the desired pairs' fates go
back to shards of ``profile_id`` to count the mapped profiles' outcomes. The lines
are gathered once, sorted and cut into numbered files; each file is gzip-compressed (mtime 0) by its
own worker. Everything is published at the end (:class:`PublishExport`), the state last
(:mod:`transforms.export_state`).

This module holds the graph (:class:`ExportAudience`); what one export is (:class:`ExportSpec`, from
the flags) is :mod:`transforms.export_spec`. The other parts: :mod:`transforms.targets`, :mod:`transforms.onboarding`,
:mod:`transforms.export_report` (the report and its checks), :mod:`transforms.suppression`; the
launcher's checks are in :mod:`transforms.preflight`.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from transforms.config import JobConfig, ProfilesConfig
from transforms.export_classify import (
    EARLIER,
    EXPORTED_SCHEMA,
    PROFILES,
    TARGETS,
    UNMAPPED_SCHEMA,
    ClassifyShard,
    ReadEarlierPart,
)
from transforms.export_decide import (
    BLOCKED,
    DESIRED,
    HELD,
    OTHERS,
    REMOVED_SCHEMA,
    CountProfileOutcomes,
    DecideShard,
)
from transforms.export_report import (
    build_export_report,
    committed_before,
    check_export_extract,
    check_export_report,
    check_export_shrink,
    check_export_targets,
    state_manifest,
)
from transforms.export_others import ReadOtherAudience, StripOtherAudiences, commit_others, other_versions
from transforms.export_profiles import ReadBlockedProfiles, ReadTargetedProfiles
from transforms.export_spec import ExportSpec, export_config
from transforms.export_state import MEMBERS, PENDING, SUCCESS, ExportState, commit_state, ensure_not_moved, match_parts
from transforms.join_inputs import BuildKeyFilter
from transforms.onboarding import SplitIntoFiles, WriteOnboardingFile, write_control_file
from transforms.outcomes import Counts, Metric, SumCounts, count
from transforms.publish import check_extract, publish_outputs
from transforms.storage import MatchFiles, join_path
from transforms.suppression import ReadSuppressionLists
from transforms.targets import ReadTargetFile
from transforms.write_parts import WriteParts

# The export's outputs (folders under the output directory).
EXPORTED, REMOVED, UNMAPPED, ONBOARDING = "exported", "removed", "unmapped", "onboarding"


# ----------------------------------------------------------------------------------------------------
# The graph
# ----------------------------------------------------------------------------------------------------
class ExportOutputs(NamedTuple):
    """What :class:`ExportAudience` gives back once the run is published."""

    report: beam.PCollection  # one element: the report dict written as report.json
    counts: beam.PCollection  # the summed ``(Count, n)`` the report was built from


class PublishExport(beam.DoFn):
    """Once every part and file is written: build and check the report, write the ``.info`` control
    file (when there is data to send), publish all outputs (``report.json`` last), then commit the
    export state (its ``_SUCCESS``): a state never gets ahead of the files it describes. An overwrite's
    versions of the other audiences it takes users out of go with its own, committed just before it
    (:mod:`transforms.export_others`)."""

    def __init__(self, spec: ExportSpec, output_dir: str, run_dir: str, targets: str, state: ExportState,
                 profiles: ProfilesConfig):
        self._spec, self._output_dir, self._run_dir = spec, output_dir, run_dir
        self._targets, self._state, self._profiles = targets, state, profiles

    def process(self, _, parts, counts, files, state_parts, strip_parts, sketches):
        counts = Counts(counts)
        check_extract(counts, sketches, self._profiles, [self._spec.data_source])
        others = other_versions(self._state, strip_parts, counts)
        report = build_export_report(self._spec, counts, files, self._targets, self._state, [e for _, e, _ in others])
        check_export_report(report)
        ds, p = self._spec.data_source, self._profiles
        check_export_extract(report, p.path, p.key_column(ds), p.allow_empty_profiles, p.consent_column, p.consent_field)
        check_export_targets(report, self._targets, p.path, p.id, self._spec.max_shrink is None)
        check_export_shrink(report, self._spec.max_shrink)
        if committed_before(self._state, self._output_dir):  # this step retried after its whole publish and commit
            yield report
            return
        ensure_not_moved(self._state)
        parts = list(parts)
        if files:
            for f in files:
                parts.append((ONBOARDING, f["path"], f["lines"]))
            info = join_path(self._run_dir, ONBOARDING, self._spec.file_names.control_file)
            write_control_file(info, files)
            parts.append((ONBOARDING, info, 0))
        outputs = {EXPORTED: EXPORTED_SCHEMA, REMOVED: REMOVED_SCHEMA, UNMAPPED: UNMAPPED_SCHEMA, ONBOARDING: None}
        manifest = state_manifest(report, self._output_dir, state_parts)
        if self._state.folder is not None:
            commit_state(self._state, manifest, PENDING)
            commit_others(others, self._state, manifest, PENDING, commit_state)
        publish_outputs(self._output_dir, self._run_dir, outputs, parts, report)
        if self._state.folder is not None:
            commit_others(others, self._state, manifest, SUCCESS, commit_state)
            commit_state(self._state, manifest)
        yield report


class ExportAudience(beam.PTransform):
    """The whole export graph from a pipeline root; publishes under ``output_dir`` (and commits the
    export state, with ``state.folder``) at the end."""

    def __init__(self, cfg: JobConfig, spec: ExportSpec, targets: str, state: ExportState, output_dir: str, run_dir: str):
        super().__init__()
        self._cfg, self._spec = export_config(cfg, spec), spec
        self._targets, self._state = targets, state
        self._output_dir, self._run_dir = output_dir, run_dir

    def expand(self, root) -> ExportOutputs:
        cfg, spec, buckets = self._cfg, self._spec, self._cfg.buckets
        targets = _read_files(root, ("ListTargetFiles", "MatchTargetFiles", "SpreadTargetFiles", "ReadTargets"),
                              [self._targets], "targets file", ReadTargetFile(buckets), tags=(ReadTargetFile.HASHES,))
        earlier = (
            root
            | "ListEarlierParts" >> beam.Create(self._state.earlier_parts())
            | "MatchEarlierParts" >> beam.FlatMap(match_parts)
            | "SpreadEarlierParts" >> beam.Reshuffle()
            | "ReadEarlier" >> beam.ParDo(ReadEarlierPart(buckets))
            .with_outputs(ReadEarlierPart.COUNTS, ReadEarlierPart.HASHES, main="shards")
        )
        suppression = root | "Suppression" >> ReadSuppressionLists(cfg)
        profile_files = _match_files(root, ("ListProfileExtracts", "MatchProfileFiles", "SpreadProfileFiles"),
                                     [cfg.profiles.path], "profile extract")
        # A first, narrow pass: the profiles with a row that is not eligible pass the filter too, so
        # that the user IDs of all their rows are blocked (transforms/export_profiles.py,
        # transforms/export_classify.py).
        blocked_profiles = profile_files | "ReadBlockedProfiles" >> beam.ParDo(
            ReadBlockedProfiles(cfg, spec), beam.pvalue.AsList(suppression))
        profile_filter = beam.pvalue.AsSingleton(
            (targets[ReadTargetFile.HASHES], earlier[ReadEarlierPart.HASHES], blocked_profiles)
            | "ProfileHashes" >> beam.Flatten()
            | "BuildProfileFilter" >> beam.CombineGlobally(BuildKeyFilter())
        )
        profiles = profile_files | "ReadTargetedProfiles" >> beam.ParDo(
            ReadTargetedProfiles(cfg, spec, buckets), profile_filter, beam.pvalue.AsList(suppression),
        ).with_outputs(ReadTargetedProfiles.COUNTS, ReadTargetedProfiles.BLOCKED, ReadTargetedProfiles.SKETCHES,
                       ReadTargetedProfiles.ZERO_LED, main="shards")
        classified = (
            {TARGETS: targets.shards, PROFILES: profiles.shards, EARLIER: earlier.shards}
            | "GroupProfileShards" >> beam.CoGroupByKey()
            | "ClassifyTargets" >> beam.ParDo(ClassifyShard(self._state.replaces, buckets),
                                               beam.pvalue.AsList(profiles[ReadTargetedProfiles.ZERO_LED]))
            .with_outputs(ClassifyShard.COUNTS, ClassifyShard.UNMAPPED, ClassifyShard.HELD, ClassifyShard.BLOCKED,
                          main="desired")
        )
        blocked = ((profiles[ReadTargetedProfiles.BLOCKED], classified[ClassifyShard.BLOCKED])
                   | "BlockedUserIds" >> beam.Flatten())
        others = (
            root
            | "ListOtherAudiences" >> beam.Create([(o.segment, o.version.members) for o in self._state.others])
            | "MatchOtherAudienceParts" >> beam.FlatMap(match_parts)
            | "ReadOtherAudiences" >> beam.ParDo(ReadOtherAudience(buckets))
        )
        decided = (
            {DESIRED: classified.desired, HELD: classified[ClassifyShard.HELD],
             BLOCKED: blocked, OTHERS: others}
            | "GroupUserIdShards" >> beam.CoGroupByKey()
            | "DecideUserIds" >> beam.ParDo(DecideShard(spec.traits, buckets))
            .with_outputs(DecideShard.COUNTS, DecideShard.SENT, DecideShard.REMOVED, DecideShard.STATE,
                          DecideShard.FATES, DecideShard.STRIPPED, main="lines")
        )
        outcomes = (
            decided[DecideShard.FATES]
            | "GroupFatesByProfile" >> beam.GroupByKey()
            | "CountProfileOutcomes" >> beam.ParDo(CountProfileOutcomes())
        )
        parts, files, split_counts, state_parts = self._write(classified, decided)
        entries = suppression | "CountSuppressionEntries" >> beam.Map(
            lambda e: count(Metric.SUPPRESSION_ENTRIES, len(e.values)))
        counts = (
            (targets[ReadTargetFile.COUNTS], profiles[ReadTargetedProfiles.COUNTS], earlier[ReadEarlierPart.COUNTS],
             classified[ClassifyShard.COUNTS], decided[DecideShard.COUNTS], outcomes, split_counts, entries)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> SumCounts()
        )
        report = (
            root
            | "Once" >> beam.Create([None])
            | "PublishExport" >> beam.ParDo(
                PublishExport(spec, self._output_dir, self._run_dir, self._targets, self._state, cfg.profiles),
                beam.pvalue.AsList(parts), beam.pvalue.AsList(counts), beam.pvalue.AsList(files),
                beam.pvalue.AsList(state_parts),
                beam.pvalue.AsList(decided[DecideShard.STRIPPED]
                                   | "StripOtherAudiences" >> StripOtherAudiences(self._state)),
                beam.pvalue.AsList(profiles[ReadTargetedProfiles.SKETCHES]),
            )
        )
        return ExportOutputs(report=report, counts=counts)

    def _write(self, classified, decided):
        """Sent, removed and unmapped pairs -> Parquet parts; the new state -> the state version's
        parts; lines -> onboarding files. Returns ``(parts, files, counts, state parts)``."""
        cfg, spec = self._cfg, self._spec

        def write(label, tables, name, schema, sort_by, run_dir):
            return tables | label >> WriteParts(name, schema, sort_by, "profile_id", run_dir, cfg.buckets,
                                                dedupe=True, threads=cfg.threads)

        pair = ["profile_id", "user_id"]
        written = (
            write("WriteExported", decided[DecideShard.SENT], EXPORTED, EXPORTED_SCHEMA, pair, self._run_dir),
            write("WriteRemoved", decided[DecideShard.REMOVED], REMOVED, REMOVED_SCHEMA, [*pair, "reason"], self._run_dir),
            write("WriteUnmapped", classified[ClassifyShard.UNMAPPED], UNMAPPED, UNMAPPED_SCHEMA, ["profile_id"],
                  self._run_dir),
        )
        if self._state.folder is not None:
            state_parts = write("WriteState", decided[DecideShard.STATE], MEMBERS, EXPORTED_SCHEMA, pair,
                                self._state.version_dir).parts
        else:
            state_parts = decided.lines.pipeline | "NoState" >> beam.Create([])
        split = (
            decided.lines
            | "KeyLines" >> beam.Map(lambda table: (0, table))
            | "GatherLines" >> beam.GroupByKey()
            | "SortAndSplit" >> beam.ParDo(SplitIntoFiles(spec.max_lines_per_file))
            .with_outputs(SplitIntoFiles.COUNTS, main="files")
        )
        files = (
            split.files
            | "SpreadFiles" >> beam.Reshuffle()
            | "WriteOnboardingFiles" >> beam.ParDo(WriteOnboardingFile(spec.file_names, join_path(self._run_dir, ONBOARDING)))
        )
        parts = tuple(w.parts for w in written) | "AllParts" >> beam.Flatten()
        return parts, files, split[SplitIntoFiles.COUNTS], state_parts


def _read_files(root, labels: tuple[str, str, str, str], patterns: list[str], description: str, reader: beam.DoFn,
                side_inputs: tuple = (), tags: tuple[str, ...] = ()):
    """List the ``patterns``, match their files, spread the files over workers and read each with
    ``reader``: main output ``shards``, plus its ``COUNTS`` and ``tags``."""
    return _match_files(root, labels[:3], patterns, description) | labels[3] >> beam.ParDo(
        reader, *side_inputs).with_outputs(reader.COUNTS, *tags, main="shards")


def _match_files(root, labels: tuple[str, str, str], patterns: list[str], description: str):
    """The files the ``patterns`` match, spread over workers (listed once: each pass reads the same files)."""
    listed, matched, spread = labels
    return root | listed >> beam.Create(patterns) | matched >> beam.ParDo(MatchFiles(description)) | spread >> beam.Reshuffle()
